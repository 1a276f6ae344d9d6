"""Benchmark: in a DM² cohort step (003), members that skip an update pay no backward pass.

``MutualLearningCohort`` (paper 003, ``tfembed.cohort.mutual_learning``) runs, every step, the
forward pass of each of its L members (each member's relation loss needs its peers' distance
matrices), then for member l a ``tf.cond`` on a Bernoulli(p_l) draw whose taken branch holds that
member's backward pass and optimizer update. A member that skips a step pays its forward pass
only. The script builds, on one backbone, image size, embedding size and batch (L2-normalised
embedders from ``build_embedder``, weights=None, Adam, metric loss ``TripletSemiHardLoss``), and
times, interleaved over several rounds (median per configuration, so machine noise hits all
alike):

* ``single_full``: one member trained alone (``compile`` with the same loss and optimizer):
  forward + backward + update;
* ``single_forward``: that member's forward pass in training mode (a ``tf.function`` of
  ``member(x, training=True)``), giving the forward share f = forward / full and the
  backward(+update) share b = 1 - f of one member's step;
* ``cohort_td``: a cohort of L = 4 members, relation weight 20 (no warm-up), temporal diversity
  p = (1, 0.5, 0.25, 0.125) (003 §3.2);
* ``cohort_all``: the same cohort with p = (1, 1, 1, 1) (control: every member updates).

The update draws are read back from ``cohort.update_counts`` over the timed steps only, and the
ideals use the observed update frequencies p̂_l (a few dozen steps do not average the draws out
exactly). In units of one member's full step, the expectation is

* cohort_td ≈ L·f + Σ_l p̂_l·b: L forward passes, a backward pass only for the members that
  update. The issue's form 1 + Σ_l p_l·b is printed too, evaluated literally; it is not the count
  for this cohort: it pays one forward pass (inside the "1") where DM² must run all L every step
  because every peer needs each member's distances, and it counts member 1's backward twice (once
  in the "1", once as p_1 = 1), so it differs from L·f + Σ p_l·b by (L - 1)·f - b;
* cohort_all ≈ L·f + L·b = L;
* the saving (cohort_all - cohort_td) ≈ (L - Σ_l p̂_l)·b: about 2.1·b for 003's probabilities.

The measured ratios can sit a little off the ideals: the cohort adds the relation losses (L
distance matrices of B×B, negligible next to the backbones), the L forward passes are
independent ops that the executor may overlap on the 2 cores, and ``train_on_batch``'s fixed
per-call cost is paid once per step in every configuration.

Usage: ``python benchmarks/cohort_step.py [--backbone resnet18] [--size 64] [--batch 32]
[--dim 128] [--steps 16] [--rounds 3]``

Measured (docs/benchmarks.md), 2 CPU cores, defaults: cohort_td / single_full 2.32 (ideal
L·f + Σp̂·b = 2.56; the literal 1 + Σp·b = 2.32), cohort_all / single_full 3.84 (ideal 4), saving
1.51 single-member steps (ideal 1.44).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.losses import TripletSemiHardLoss  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402
from tfembed.cohort.mutual_learning import MutualLearningCohort  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402

MEMBERS = 4
TD_PROBABILITIES = (1.0, 0.5, 0.25, 0.125)  # 003 §3.2: p_l = 2^-(l-1)
RELATION_WEIGHT = 20.0


def _optimizer():
    return keras.optimizers.Adam(1e-5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="classes x 4 images")
    parser.add_argument("--dim", type=int, default=128, help="embedding size of every member")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b, s, d, n = args.batch, args.size, args.dim, MEMBERS
    shape = (s, s, 3)
    start = time.perf_counter()
    # One train function per model: TF warns about "retracing" across them; none happens.
    tf.get_logger().setLevel("ERROR")

    keras.utils.set_random_seed(0)

    def members(tag):
        return [build_embedder(args.backbone, d, input_shape=shape, weights=None,
                               name=f"{tag}_member{l}") for l in range(n)]

    single = build_embedder(args.backbone, d, input_shape=shape, weights=None, name="single")
    single.compile(optimizer=_optimizer(), loss=TripletSemiHardLoss(), jit_compile=False)
    single.optimizer.build(single.trainable_variables)
    forward = tf.function(lambda x: single(x, training=True))

    cohorts = {}
    for key, probs in (("cohort_td", TD_PROBABILITIES), ("cohort_all", (1.0,) * n)):
        cohort = MutualLearningCohort(members(key), metric_loss=TripletSemiHardLoss(),
                                      relation_weight=RELATION_WEIGHT, warmup_steps=0,
                                      update_probabilities=list(probs), seed=0, name=key)
        cohort.compile(optimizer=_optimizer(), jit_compile=False)
        cohorts[key] = cohort

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(b // 4), 4).astype(np.int64)  # b/4 classes x 4 images
    batches = [(tf.constant(rng.uniform(0, 255, (b, *shape)).astype(np.float32)),
                tf.constant(labels)) for _ in range(4)]
    # train_on_batch runs the same compiled train function as fit, one step per call, on
    # batches already in memory: no input pipeline in the measurement.
    runs = {
        "single_full": single.train_on_batch,
        "single_forward": lambda x, y: forward(x).numpy(),
        "cohort_td": cohorts["cohort_td"].train_on_batch,
        "cohort_all": cohorts["cohort_all"].train_on_batch,
    }
    for fn in runs.values():  # trace (both branches of every tf.cond) and warm up
        time_per_step(fn, batches, 3)
    times = {key: [] for key in runs}
    updates = {key: np.zeros(n, np.int64) for key in cohorts}  # over the timed steps only
    for _ in range(args.rounds):
        for key, fn in runs.items():
            before = cohorts[key].update_counts.numpy() if key in cohorts else None
            times[key].append(time_per_step(fn, batches, args.steps))
            if key in cohorts:
                updates[key] += cohorts[key].update_counts.numpy() - before
    med = {key: statistics.median(t) for key, t in times.items()}
    total_steps = args.rounds * args.steps

    full = med["single_full"]
    f = med["single_forward"] / full
    bwd = 1.0 - f
    p_hat = updates["cohort_td"] / total_steps
    p_all = updates["cohort_all"] / total_steps
    td, all_ = med["cohort_td"] / full, med["cohort_all"] / full
    ideal_td = n * f + p_hat.sum() * bwd
    literal_td = 1.0 + sum(TD_PROBABILITIES) * bwd
    ideal_all = n * f + p_all.sum() * bwd
    saving = (med["cohort_all"] - med["cohort_td"]) / full
    ideal_saving = (p_all.sum() - p_hat.sum()) * bwd

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"{args.backbone}, weights=None, {s}x{s}, batch {b} ({b // 4} classes x 4), {d}-d, "
          f"Adam, triplet semi-hard, relation weight {RELATION_WEIGHT:g}, L = {n}; "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    header = f"{'configuration':>15} | {'ms/step':>8} | {'/ single_full':>13} | rounds (ms)"
    print(header)
    print("-" * len(header))
    for key in runs:
        print(f"{key:>15} | {1000 * med[key]:>8.1f} | {med[key] / full:>13.3f} | "
              + ", ".join(f"{1000 * t:.1f}" for t in times[key]))
    print(f"forward share f = {f:.3f}, backward(+update) share b = 1 - f = {bwd:.3f}")
    print("update frequency per member over the timed steps (count / steps):")
    for key, probs in (("cohort_td", TD_PROBABILITIES), ("cohort_all", (1.0,) * n)):
        print(f"  {key:>10}: p = " + ", ".join(f"{p:g}" for p in probs) + "; observed "
              + ", ".join(f"{c}/{total_steps} = {c / total_steps:.3f}" for c in updates[key])
              + f"; sum {updates[key].sum() / total_steps:.3f}")
    print(f"cohort_td / single_full: {td:.3f}  (ideal L*f + sum p^*b = {n}*{f:.3f} + "
          f"{p_hat.sum():.3f}*{bwd:.3f} = {ideal_td:.3f}; issue's 1 + sum p*b taken literally "
          f"= {literal_td:.3f})")
    print(f"cohort_all / single_full: {all_:.3f}  (ideal L*f + L*b = {ideal_all:.3f})")
    print(f"saving (cohort_all - cohort_td) / single_full: {saving:.3f}  "
          f"(ideal (L - sum p^)*b = {p_all.sum() - p_hat.sum():.3f}*{bwd:.3f} = "
          f"{ideal_saving:.3f})")
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
