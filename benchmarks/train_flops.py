"""Benchmark: training-step FLOP/s against the machine's own fp32 GEMM FLOP/s (issue 7).

How much of the CPU's dense-matmul speed does an embedder's training step reach? For each model
(``--models``, default ResNet-18 at 64 px, batch 32, and ResNet-50 at 224 px, batch 16; a 128-d
``build_embedder`` head, weights=None, ``TripletSemiHardLoss``, Adam,
``compile(jit_compile=False)``) the script

* counts the FLOPs of one full training step from the model (nothing guessed, nothing run): it
  traces a ``tf.function`` doing what ``train_on_batch`` does -- ``model(x, training=True)``, the
  loss, ``tape.gradient`` over the trainable variables, and Adam's ``apply_gradients`` -- on a
  fixed ``[batch, size, size, 3]`` input and sums the TF profiler's per-op FLOP rules (the ones
  ``tensorflow.python.profiler.model_analyzer.profile`` with
  ``ProfileOptionBuilder.float_operation()`` sums; 2 FLOPs per multiply-add) over that graph,
  split into forward (+ loss), backward and optimizer ops;
* times the step: ``train_on_batch`` on fixed in-memory batches after warm-up (no input
  pipeline);
* times a square fp32 ``tf.linalg.matmul`` (``--gemm`` = 2048: 2·n³ FLOPs, ``--gemm-reps`` per
  round) in the same rounds, interleaved with the steps (medians over rounds, so machine noise
  hits all alike);

and prints GFLOPs/step, ms/step, achieved GFLOP/s, GEMM GFLOP/s and the ratio achieved ÷ GEMM
(goal ≥ 0.5 for ResNet-18 at 64 px; medians of wall time), the same ratio against the best GEMM
call, and in process CPU time (as recall.py: less sensitive to other processes on the machine).
It also prints step time and images/s against the global batch size (``--batches``, ResNet-18
at ``--sweep-size`` 64 px only): the "step time vs global batch size" figure.

What is counted. The profiler HAS FLOP rules for the backward ops of convolutions and matmuls
(``Conv2DBackpropInput``, ``Conv2DBackpropFilter``, ``MatMul`` with either transpose,
``BiasAddGrad``, ``MaxPoolGrad``, ``RsqrtGrad``), so the backward pass is counted from the
gradient graph itself, with two corrections found by comparing against hand counts:

1. its ``Conv2DBackprop*`` rules take the forward conv's *input* size divided by the stride²,
   which overcounts a strided ``valid`` conv on an explicitly padded input (ResNet's 7×7/2 stem
   on a 70×70 padded 64 px image: +20 %; a 3×3/2 conv on a padded 18×18 map: +27 %). Here each
   ``Conv2DBackpropInput`` / ``Conv2DBackpropFilter`` (and depthwise ones, which have no rule) is
   counted exactly as its forward conv: 2 · (elements of the output gradient) · kh · kw · C_in;
2. the traced gradient graph holds ops the runtime prunes: the first conv's gradient with respect
   to its input image (nothing needs it). Only ops that the function's outputs or its stateful ops
   (variable updates) depend on are counted.

So: every conv and matmul of the forward pass, of both gradients (input and kernel; no input
gradient where the input depends on no trainable variable), batch-norm arithmetic (Keras 3 runs
unfused ``moments`` + ``batch_normalization``: Mean, SquaredDifference, Rsqrt, Mul, Add and their
gradients), pooling, bias, the loss's distance matrix, and Adam's elementwise update ops that have
a rule. Ops without a FLOP rule count 0: ReLU and ReluGrad, Sqrt (Adam's), casts, pads,
reshapes, top-k, gathers (the compute-like ones are listed in the output). Convolutions and
matmuls are ~99 % of the total at the default sizes (Adam's update, ~8 FLOPs per parameter, is
~0.3 %).

Usage: ``python benchmarks/train_flops.py [--models resnet18:64:32,resnet50:224:16]
[--batches 8,16,32,64] [--sweep-size 64] [--steps 3] [--rounds 3] [--gemm 2048] [--gemm-reps 5]``
(quick check: ``--models resnet18:32:8 --batches 4,8 --sweep-size 32 --steps 1 --rounds 1
--gemm 512``)

Measured (docs/benchmarks.md), 2 CPU cores, defaults: train-step FLOP/s ÷ fp32 GEMM FLOP/s 0.46
at ResNet-18 @ 64 px, batch 32 (goal ≥ 0.5: not met); 0.55 at ResNet-50 @ 224 px, batch 16.
"""

import argparse
import collections
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402
from tensorflow.python.profiler import model_analyzer  # noqa: E402
from tensorflow.python.profiler.option_builder import ProfileOptionBuilder  # noqa: E402

from tfembed.losses import TripletSemiHardLoss  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402

SECTIONS = ("forward", "backward", "optimizer")
# Live op types without a FLOP rule that move or reshape data rather than compute (not listed).
_BOOKKEEPING = frozenset((
    "Cast", "ConcatV2", "Const", "ExpandDims", "Fill", "Identity", "IdentityN", "NoOp", "Pack",
    "Pad", "Placeholder", "Prod", "Range", "ReadVariableOp", "Reshape", "ShapeN", "Slice",
    "Squeeze", "StopGradient", "StridedSlice", "StridedSliceGrad", "Tile", "Transpose"))
_CONV_BACKPROP = ("Conv2DBackpropInput", "Conv2DBackpropFilter",
                  "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter")


def _trace_train_step(model, loss, optimizer, input_shape, batch):
    """The graph of one training step and the op-index boundaries of its three sections."""
    marks = {}

    def step(x, y):
        graph = tf.compat.v1.get_default_graph()
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            value = loss(y, out)
        marks["forward"] = len(graph.get_operations())
        grads = tape.gradient(value, model.trainable_variables)
        marks["backward"] = len(graph.get_operations())
        if optimizer is None:
            return value, grads
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    fn = tf.function(step)
    graph = fn.get_concrete_function(tf.TensorSpec([batch, *input_shape], tf.float32),
                                     tf.TensorSpec([batch], tf.int64)).graph
    return graph, marks


def _live_ops(graph):
    """Ops the runtime executes: ancestors of the function's outputs and stateful control outputs
    (variable updates); dead branches (e.g. the first conv's input gradient) are left out."""
    roots = [t.op for t in graph.outputs] + list(graph.control_outputs)
    live, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op.name in live:
            continue
        live.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


def op_flops(graph, op):
    """FLOPs of one graph op: the profiler's rule, except conv backprops (counted exactly as the
    forward conv: 2 · elements(output gradient) · kh · kw · C_in). None if no rule applies."""
    if op.type in _CONV_BACKPROP:
        dy = op.inputs[2].shape
        kernel = op.inputs[1].shape if op.type.endswith("Input") else op.outputs[0].shape
        if op.type.startswith("Depthwise"):  # [kh, kw, C_in, multiplier]; dy has C_in·mult
            return 2 * dy.num_elements() * int(kernel[0]) * int(kernel[1])
        return 2 * dy.num_elements() * int(kernel[0]) * int(kernel[1]) * int(kernel[2])
    try:
        stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
    except ValueError:  # a shape the rule needs is not static
        return None
    return None if stats.value is None else int(stats.value)


def profiler_total(graph):
    """``model_analyzer.profile``'s float_operation total over ``graph`` (uncorrected)."""
    options = (ProfileOptionBuilder(ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the profiler's TF1 shape helpers log deprecation warnings
    try:
        return model_analyzer.profile(graph, options=options).total_float_ops
    finally:
        logger.setLevel(level)


def train_step_flops(model, loss, input_shape, batch, optimizer=None):
    """FLOPs of one training step of ``model`` on a ``[batch, *input_shape]`` batch.

    Args:
      model: a Keras model (traced, never run).
      loss: ``loss(labels, outputs)``; labels are ``int64 [batch]``.
      optimizer: a built Keras optimizer whose ``apply_gradients`` is traced too (None: forward,
        loss and gradients only).

    Returns:
      dict with ``total``; per section (``forward`` = model + loss, ``backward`` = gradients,
      ``optimizer``) the FLOPs; ``by_type``: ``{section: Counter(op type -> FLOPs)}``;
      ``no_rule``: Counter of live op types without a FLOP rule; ``profiler_raw``: the profiler's
      own total over the whole traced graph (before the two corrections).
    """
    graph, marks = _trace_train_step(model, loss, optimizer, tuple(input_shape), batch)
    live = _live_ops(graph)
    by_type = {s: collections.Counter() for s in SECTIONS}
    no_rule = collections.Counter()
    for index, op in enumerate(graph.get_operations()):
        if op.name not in live:
            continue
        section = ("forward" if index < marks["forward"] else
                   "backward" if index < marks["backward"] else "optimizer")
        flops = op_flops(graph, op)
        if flops is None:
            no_rule[op.type] += 1
        else:
            by_type[section][op.type] += flops
    result = {s: sum(by_type[s].values()) for s in SECTIONS}
    result.update(total=sum(result[s] for s in SECTIONS), by_type=by_type, no_rule=no_rule,
                  profiler_raw=profiler_total(graph))
    return result


def gemm_times(a, b, reps):
    """Wall seconds of each of ``reps`` eager ``tf.linalg.matmul(a, b)`` calls (CPU eager ops
    run synchronously: the product is complete when the call returns)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = tf.linalg.matmul(a, b)
        times.append(time.perf_counter() - start)
        del out
    return times


def parse_models(text):
    """``"resnet18:64:32,resnet50:224:16"`` -> ``[("resnet18", 64, 32), ("resnet50", 224, 16)]``."""
    models = []
    for item in text.split(","):
        backbone, size, batch = item.strip().split(":")
        models.append((backbone, int(size), int(batch)))
    return models


def _labels(batch):
    per_class = 4 if batch >= 8 else 2
    labels = np.repeat(np.arange(batch // per_class + 1), per_class)
    return np.resize(labels, batch).astype(np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18:64:32,resnet50:224:16",
                        help="comma-separated backbone:size:batch")
    parser.add_argument("--batches", default="8,16,32,64",
                        help="global batch sizes of the step-time sweep (resnet18); '' for none")
    parser.add_argument("--sweep-size", type=int, default=64, help="image size of the sweep")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gemm", type=int, default=2048, help="n of the n x n fp32 GEMM")
    parser.add_argument("--gemm-reps", type=int, default=5, help="GEMM calls per round")
    args = parser.parse_args()
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")  # one train function per model: "retracing" warnings

    headline = parse_models(args.models)
    sweep = [("resnet18", args.sweep_size, int(b)) for b in args.batches.split(",") if b.strip()]
    configs = list(dict.fromkeys(headline + sweep))  # (backbone, size, batch), deduplicated

    models, flops, batches = {}, {}, {}
    rng = np.random.default_rng(0)
    for key in configs:
        backbone, s, b = key
        keras.utils.set_random_seed(0)
        model = build_embedder(backbone, args.dim, input_shape=(s, s, 3), weights=None,
                               name=f"{backbone}_{s}_{b}")
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=TripletSemiHardLoss(),
                      jit_compile=False)
        model.optimizer.build(model.trainable_variables)
        counter_opt = keras.optimizers.Adam(1e-4)  # traced only; the model's own stays untouched
        counter_opt.build(model.trainable_variables)
        flops[key] = train_step_flops(model, TripletSemiHardLoss(), (s, s, 3), b, counter_opt)
        models[key] = model
        batches[key] = [(tf.constant(rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32)),
                         tf.constant(_labels(b))) for _ in range(2)]

    n = args.gemm
    a = tf.constant(rng.standard_normal((n, n)).astype(np.float32))
    bm = tf.constant(rng.standard_normal((n, n)).astype(np.float32))
    gemm_flops = 2.0 * n ** 3
    gemm_times(a, bm, 2)  # warm-up (thread pools, oneDNN primitives)
    # train_on_batch runs the same compiled train function as fit, one step per call, on
    # batches already in memory: no input pipeline in the measurement.
    for key, model in models.items():  # trace and warm up
        time_per_step(model.train_on_batch, batches[key], 2)

    times = {key: [] for key in configs}
    cpu = {key: [] for key in configs}  # process CPU seconds per step (all threads)
    gemm, gemm_cpu = [], []
    for _ in range(args.rounds):
        c0 = time.process_time()
        gemm.extend(gemm_times(a, bm, args.gemm_reps))
        gemm_cpu.append((time.process_time() - c0) / args.gemm_reps)
        for key, model in models.items():
            c0 = time.process_time()
            times[key].append(time_per_step(model.train_on_batch, batches[key], args.steps))
            cpu[key].append((time.process_time() - c0) / args.steps)
    med = {key: statistics.median(t) for key, t in times.items()}
    med_cpu = {key: statistics.median(t) for key, t in cpu.items()}
    gemm_rate = gemm_flops / statistics.median(gemm)
    gemm_cpu_rate = gemm_flops / statistics.median(gemm_cpu)

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}; load {os.getloadavg()[0]:.1f} (1-min average at the end)")
    print(f"{args.dim}-d embedders, weights=None, TripletSemiHardLoss, Adam, jit_compile=False, "
          f"train_on_batch on in-memory batches; {args.rounds} rounds x {args.steps} steps "
          f"(median), GEMM {args.gemm_reps} calls per round (median)")
    print(f"GEMM fp32 {n}x{n} @ {n}x{n}: median {1000 * statistics.median(gemm):.1f} ms = "
          f"{gemm_rate / 1e9:.1f} GFLOP/s (best {gemm_flops / min(gemm) / 1e9:.1f})")
    print("FLOPs per step counted from the traced train step (profiler rules, conv backprops "
          "exact, dead ops pruned)")
    header = (f"{'model':>20} | {'GFLOPs/step':>11} | {'fwd':>6} | {'bwd':>6} | {'opt':>5} | "
              f"{'ms/step':>8} | {'GFLOP/s':>7} | {'GEMM GFLOP/s':>12} | {'ratio':>5}")
    print(header)
    print("-" * len(header))
    for key in headline:
        backbone, s, b = key
        f = flops[key]
        rate = f["total"] / med[key]
        print(f"{f'{backbone}@{s} b{b}':>20} | {f['total'] / 1e9:>11.2f} | "
              f"{f['forward'] / 1e9:>6.2f} | {f['backward'] / 1e9:>6.2f} | "
              f"{f['optimizer'] / 1e9:>5.2f} | {1000 * med[key]:>8.1f} | {rate / 1e9:>7.1f} | "
              f"{gemm_rate / 1e9:>12.1f} | {rate / gemm_rate:>5.2f}")
    for key in headline:
        backbone, s, b = key
        f = flops[key]
        conv = sum(v for sec in SECTIONS for t, v in f["by_type"][sec].items()
                   if t.startswith(("Conv2D", "Depthwise", "MatMul", "BatchMatMul")))
        print(f"{backbone}@{s} b{b}: backward/forward FLOPs {f['backward'] / f['forward']:.2f}; "
              f"conv+matmul share {conv / f['total']:.4f}; profiler's raw total "
              f"{f['profiler_raw'] / 1e9:.2f} G (uncorrected: conv backprop rule, dead ops); "
              f"live op types without a FLOP rule: "
              + ", ".join(sorted(t for t in f["no_rule"] if t not in _BOOKKEEPING
                                 and not t.startswith("Assign"))))
    key0 = headline[0]
    ratio0 = flops[key0]["total"] / med[key0] / gemm_rate
    print(f"RATIO {key0[0]}@{key0[1]} b{key0[2]} training GFLOP/s / GEMM GFLOP/s = {ratio0:.2f} "
          f"(goal >= 0.5: {'MET' if ratio0 >= 0.5 else 'NOT MET'}); against the best GEMM call "
          f"{flops[key0]['total'] / med[key0] / (gemm_flops / min(gemm)):.2f}")
    print("same ratios in CPU time (FLOPs per process CPU-second; less sensitive to other "
          "processes on the machine): " + ", ".join(
              f"{k[0]}@{k[1]} b{k[2]} {flops[k]['total'] / med_cpu[k] / gemm_cpu_rate:.2f}"
              for k in headline))

    if sweep:
        print(f"\nstep time vs global batch size (resnet18@{args.sweep_size}, same models, "
              f"same rounds)")
        header = (f"{'batch':>5} | {'ms/step':>8} | {'images/s':>8} | {'GFLOPs/step':>11} | "
                  f"{'GFLOP/s':>7} | {'÷ GEMM':>6} | rounds (ms)")
        print(header)
        print("-" * len(header))
        for key in sweep:
            b = key[2]
            rate = flops[key]["total"] / med[key]
            print(f"{b:>5} | {1000 * med[key]:>8.1f} | {b / med[key]:>8.1f} | "
                  f"{flops[key]['total'] / 1e9:>11.2f} | {rate / 1e9:>7.1f} | "
                  f"{rate / gemm_rate:>6.2f} | "
                  + ", ".join(f"{1000 * t:.0f}" for t in times[key]))
    print("step rounds (ms): " + "; ".join(
        f"{k[0]}@{k[1]} b{k[2]} " + ", ".join(f"{1000 * t:.0f}" for t in times[k])
        for k in headline))
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
