"""Benchmark: what an ABE-M training step costs over the single learner, for M = 1, 2, 4, 8 (002).

ABE-M (paper 002, ``tfembed.ensemble.AttentionEnsemble``) runs one spatial extractor S, one attention
trunk C, M attention masks, and the global embedding function G once over the M·B attended maps.
Its step therefore grows with M through G (and the loss terms), not through S or C. The script
builds, on one backbone, image size, embedding size D and batch:

* the single learner: ``build_embedder(backbone, D)`` (S + G) compiled with
  ``ContrastiveLoss()`` (margin 1), plain ``compile``/``fit`` (002's 1-head);
* ABE-M for M = 1, 2, 4, 8: ``build_attention_ensemble(backbone, M, D)``, divergence weight 1
  (none for ABE-1: one learner has no pair to diverge from);

all with SGD, momentum 0.9, and weights=None. It reports for each model

* the forward FLOPs per image, counted from the model, not guessed: the TF profiler's per-op FLOP
  rules (``tensorflow.python.profiler.model_analyzer.profile`` with
  ``ProfileOptionBuilder.float_operation()``) over the graph of a ``tf.function`` calling the model
  in inference mode on a fixed-shape batch. Convolutions and matmuls count 2 FLOPs per
  multiply-add; elementwise ops with a FLOP rule (batch-norm arithmetic, bias, pooling, the
  mask product) count too. 002 Table 1 gives 1.58 (1-head), 2.21, 2.96, 4.46, 7.46 ×10⁹ (ABE-1,
  -2, -4, -8; GoogLeNet, 224 px); its 1-head figure matches GoogLeNet's ~1.5 G multiply-adds, so
  compare ratios, not absolute numbers. Paper ratios to ABE-1: 1, 1.34, 2.02, 3.38; ABE-1 /
  1-head = 1.40;
* the training-step time, ``train_on_batch`` on in-memory batches after warm-up, the models
  interleaved over several rounds (median per model, so machine noise hits all alike), and its
  ratio to the single learner's step.

Expectation: FLOPs and step time grow roughly linearly in M, by about one G per learner, from a
fixed cost of S + C. On ``inception_v3`` (our stand-in for GoogLeNet) the split mirrors 002 Fig. 3:
S = input → mixed3 (the reduction to stride 16, as GoogLeNet's pool3), C = mixed4 → mixed7 (the
stride-16 modules, as inception(4a)-(4e): no stride to remove), G = mixed4 → mixed10; so the FLOP
ratios should track the paper's. Step-time ratios can differ from FLOP ratios on CPU:

* G runs over M·B rows, and at a small image size its maps are tiny (112 px: mixed4..mixed7 at
  5×5, mixed8..mixed10 at 2×2): small convolutions use the cores poorly, so more rows can cost
  less per row than the FLOPs say, while the work that is not FLOPs (the [B, h, w, M, C] attended
  tensor, its transpose into M·B rows, their gradients) grows with M too;
* a training step adds the backward pass and the optimizer (about constant in M: the parameter
  count hardly changes with M) to the forward FLOPs counted here.

Usage: ``python benchmarks/abe_step.py [--backbone inception_v3] [--size 112] [--batch 16]
[--dim 512] [--steps 3] [--rounds 3]`` (also ``--backbone resnet18 --size 64``)

Measured (docs/benchmarks.md), 2 CPU cores, defaults: FLOPs ÷ ABE-1 0.74 / 1 / 1.35 / 2.05 / 3.45
(single, ABE-1, -2, -4, -8; paper 0.71 / 1 / 1.34 / 2.02 / 3.38); step ÷ single 1.27 / 1.64 /
2.12 / 3.75 for ABE-1 / 2 / 4 / 8.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.profiler import model_analyzer  # noqa: E402
from tensorflow.python.profiler.option_builder import ProfileOptionBuilder  # noqa: E402

from tfembed.losses import ContrastiveLoss  # noqa: E402
from tfembed.ensemble import build_attention_ensemble  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402

LEARNERS = (1, 2, 4, 8)
# 002 Table 1, flops ×10⁹ (GoogLeNet, 224 px, 512-d ensembles).
PAPER_GFLOPS = {"single": 1.58, 1: 2.21, 2: 2.96, 4: 4.46, 8: 7.46}


def forward_flops(model, input_shape, batch=1):
    """Forward FLOPs per image of ``model`` in inference mode, from the TF profiler.

    Traces ``model(x, training=False)`` in a ``tf.function`` on a fixed ``[batch, *input_shape]``
    float32 input and sums the profiler's per-op FLOP rules over the concrete function's graph
    (2 FLOPs per multiply-add for convolutions and matmuls). Nothing is executed.
    """
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(
        tf.TensorSpec([batch, *input_shape], tf.float32)).graph
    options = (ProfileOptionBuilder(ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the profiler's TF1 shape helpers log deprecation warnings
    try:
        info = model_analyzer.profile(graph, options=options)
    finally:
        logger.setLevel(level)
    return info.total_float_ops / batch


def _optimizer():
    return keras.optimizers.SGD(1e-4, momentum=0.9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512, help="ensemble embedding size D")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b, s, d = args.batch, args.size, args.dim
    shape = (s, s, 3)
    start = time.perf_counter()
    # One train function per model: TF warns about "retracing" across them; none happens.
    tf.get_logger().setLevel("ERROR")

    keras.utils.set_random_seed(0)
    single = build_embedder(args.backbone, d, input_shape=shape, name="single")
    single.compile(optimizer=_optimizer(), loss=ContrastiveLoss(), jit_compile=False)
    single.optimizer.build(single.trainable_variables)
    models = {"single": single}
    for m in LEARNERS:
        abe = build_attention_ensemble(args.backbone, num_learners=m, embedding_dim=d,
                                       input_shape=shape, weights=None, divergence_weight=1.0,
                                       name=f"abe_{m}")
        abe.compile(optimizer=_optimizer(), jit_compile=False)
        models[m] = abe

    flops = {key: forward_flops(model, shape) for key, model in models.items()}
    params = {key: model.count_params() for key, model in models.items()}

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(b // 2), 2).astype(np.int64)  # pairs for the contrastive loss
    batches = [(tf.constant(rng.uniform(0, 255, (b, *shape)).astype(np.float32)),
                tf.constant(labels)) for _ in range(2)]
    # train_on_batch runs the same compiled train function as fit, one step per call, on
    # batches already in memory: no input pipeline in the measurement.
    runs = {key: model.train_on_batch for key, model in models.items()}
    for fn in runs.values():  # trace and warm up
        time_per_step(fn, batches, 2)
    times = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, fn in runs.items():
            times[key].append(time_per_step(fn, batches, args.steps))
    med = {key: statistics.median(t) for key, t in times.items()}

    def name(key):
        return "single (1-head)" if key == "single" else f"ABE-{key}"

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"{args.backbone}, weights=None, {s}x{s}, batch {b}, D = {d} (D/M per learner), "
          f"SGD momentum 0.9; {args.rounds} rounds x {args.steps} steps (median)")
    print("FLOPs: forward, inference mode, per image (TF profiler, 2 per multiply-add); "
          "paper: 002 Table 1, GoogLeNet 224 px")
    header = (f"{'model':>15} | {'params':>10} | {'GFLOPs/img':>10} | {'FLOPs/ABE-1':>11} | "
              f"{'paper/ABE-1':>11} | {'step ms':>8} | {'step/single':>11}")
    print(header)
    print("-" * len(header))
    for key in models:
        print(f"{name(key):>15} | {params[key]:>10,} | {flops[key] / 1e9:>10.3f} | "
              f"{flops[key] / flops[1]:>11.2f} | "
              f"{PAPER_GFLOPS[key] / PAPER_GFLOPS[1]:>11.2f} | {1000 * med[key]:>8.1f} | "
              f"{med[key] / med['single']:>11.2f}")
    print(f"ABE-1 / single: FLOPs {flops[1] / flops['single']:.2f} "
          f"(paper {PAPER_GFLOPS[1] / PAPER_GFLOPS['single']:.2f}), "
          f"step {med[1] / med['single']:.2f}")
    print(f"ABE-8 / ABE-1: FLOPs {flops[8] / flops[1]:.2f} "
          f"(paper {PAPER_GFLOPS[8] / PAPER_GFLOPS[1]:.2f}), step {med[8] / med[1]:.2f}")
    print("step rounds (ms): " + "; ".join(
        f"{name(key)} " + ", ".join(f"{1000 * t:.0f}" for t in times[key]) for key in times))
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
