"""Benchmark: mixed precision ÷ float32 and XLA ÷ no-XLA training-step time (issue 7).

What do the two standard speed switches buy for an embedder's training step on this machine? The
script builds the same embedder (``--backbone`` resnet18, ``--size`` 64 px, 128-d, weights=None,
same initial weights) once per configuration -- dtype policy (``float32`` plus each of
``--policies``, default ``mixed_bfloat16``; ``mixed_float16`` also possible) × ``jit_compile``
(False, and True unless ``--no-xla``) -- each model built after
``keras.mixed_precision.set_global_policy(policy)`` (restored to ``float32`` afterwards), compiled
with ``TripletSemiHardLoss`` and Adam (wrapped in ``keras.optimizers.LossScaleOptimizer`` under
``mixed_float16``, as ``compile`` would), and times ``train_on_batch`` on the same fixed in-memory
batches (``--batch`` 32, float32 pixels) after warm-up, interleaved over ``--rounds`` rounds
(median per configuration, so machine noise hits all alike).

The embedder's head (``embedding_dense`` and the ``l2_norm`` UnitNormalization) is pinned to
float32 by ``build_embedder``, so under a mixed policy the backbone computes in 16 bits while the
embeddings -- and the metric loss on them -- stay float32; the script prints the output dtype
and how many layers compute in 16 bits.

It prints per configuration ms/step, images/s, the ratio to float32 without XLA and the time
of the first step (tracing, plus XLA compilation where on), then the RATIOS mixed ÷ float32 (no
XLA; < 1 is a speed-up) and XLA ÷ no-XLA (float32, and per mixed policy; < 1 is a speed-up). On a
CPU without native bf16/fp16 matmul units, 16-bit compute may well be slower than fp32: the
numbers are reported as measured, nothing is tuned.

Usage: ``python benchmarks/mixed_precision.py [--backbone resnet18] [--size 64] [--batch 32]
[--policies mixed_bfloat16] [--steps 5] [--rounds 3] [--no-xla]`` (also ``--policies
mixed_bfloat16,mixed_float16``; quick check: ``--backbone small_cnn --size 32 --batch 8 --steps 1
--rounds 1 --no-xla``; XLA compilation adds ~20 s per configuration even then)

Measured (docs/benchmarks.md), 2 CPU cores, defaults: mixed_bfloat16 ÷ float32 step time 1.90,
XLA ÷ no-XLA 4.05 (both slower on this CPU: no bf16 instructions, XLA convs slower than oneDNN).
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

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402


def build_under_policy(policy, backbone, dim, size, weights, jit_compile):
    """The embedder built and compiled under ``policy`` (the global policy is restored after)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_embedder(backbone, dim, input_shape=(size, size, 3), weights=None,
                               name=f"{backbone}_{policy}_{'xla' if jit_compile else 'noxla'}")
        model.set_weights(weights)
        optimizer = keras.optimizers.Adam(1e-4)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=TripletSemiHardLoss(), jit_compile=jit_compile)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--policies", default="mixed_bfloat16",
                        help="comma-separated mixed policies compared with float32")
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runs")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b, s = args.batch, args.size
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")  # one train function per model: "retracing" warnings

    policies = ["float32"] + [p.strip() for p in args.policies.split(",") if p.strip()]
    jits = [False] if args.no_xla else [False, True]
    keras.utils.set_random_seed(0)
    weights = build_embedder(args.backbone, args.dim, input_shape=(s, s, 3),
                             weights=None).get_weights()

    rng = np.random.default_rng(0)
    labels = np.resize(np.repeat(np.arange(b // 4 + 1), 4), b).astype(np.int64)
    batches = [(tf.constant(rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32)),
                tf.constant(labels)) for _ in range(2)]

    models, info, first_step, failed = {}, {}, {}, {}
    for policy in policies:
        for jit in jits:
            key = (policy, jit)
            model = build_under_policy(policy, args.backbone, args.dim, s, weights, jit)
            low = sum(1 for layer in model.layers
                      if getattr(layer, "compute_dtype", "float32") in ("bfloat16", "float16"))
            info[key] = (model(batches[0][0][:2], training=False).dtype.name, low,
                         len(model.layers))
            try:
                t0 = time.perf_counter()
                model.train_on_batch(*batches[0])  # trace (and XLA-compile)
                first_step[key] = time.perf_counter() - t0
                time_per_step(model.train_on_batch, batches, 2)  # warm up
            except Exception as err:  # e.g. an op XLA cannot compile: report, keep going
                failed[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
                continue
            models[key] = model

    times = {key: [] for key in models}
    for _ in range(args.rounds):
        for key, model in models.items():
            times[key].append(time_per_step(model.train_on_batch, batches, args.steps))
    med = {key: statistics.median(t) for key, t in times.items()}

    def name(key):
        return f"{key[0]}{' + XLA' if key[1] else ''}"

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}; load {os.getloadavg()[0]:.1f} (1-min average at the end)")
    print(f"{args.backbone} embedder {s}x{s}, {args.dim}-d, weights=None, batch {b}, "
          f"TripletSemiHardLoss, Adam; {args.rounds} rounds x {args.steps} steps (median)")
    header = (f"{'configuration':>22} | {'ms/step':>8} | {'images/s':>8} | {'÷ fp32':>6} | "
              f"{'1st step s':>10} | {'output':>7} | {'16-bit layers':>13} | rounds (ms)")
    print(header)
    print("-" * len(header))
    base = med.get(("float32", False))
    for key in info:
        out, low, total = info[key]
        if key in failed:
            print(f"{name(key):>22} | failed: {failed[key]}")
            continue
        print(f"{name(key):>22} | {1000 * med[key]:>8.1f} | {b / med[key]:>8.1f} | "
              f"{med[key] / base if base else float('nan'):>6.2f} | {first_step[key]:>10.1f} | "
              f"{out:>7} | {f'{low}/{total}':>13} | "
              + ", ".join(f"{1000 * t:.0f}" for t in times[key]))
    for policy in policies[1:]:
        key = (policy, False)
        if key in med and base:
            print(f"RATIO {policy} / float32 step time (no XLA) = {med[key] / base:.2f} "
                  f"(< 1: mixed precision is faster)")
    if ("float32", True) in med and base:
        print(f"RATIO XLA / no-XLA step time (float32) = {med[('float32', True)] / base:.2f} "
              f"(< 1: XLA is faster)")
    for policy in policies[1:]:
        if (policy, True) in med and (policy, False) in med:
            print(f"      XLA / no-XLA step time ({policy}) = "
                  f"{med[(policy, True)] / med[(policy, False)]:.2f}")
    print(f"global policy after the run: {keras.mixed_precision.global_policy().name}")
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
