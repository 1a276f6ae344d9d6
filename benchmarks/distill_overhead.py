"""Benchmark: what a Distiller step costs over training the student alone (papers 001 / 004).

A Distiller step = the student's training step + one teacher forward pass in inference mode
(outside the tape: no backward pass through the teacher, no optimizer work for it) + the
teacher-loss arithmetic. So the ratio

    time(Distiller step) / time(student-alone step)

should not exceed ``1 + time(teacher inference) / time(student step) + 0.1``. The script builds
001's pair (ResNet-101 teacher → ResNet-18 student, 512-d) and times, interleaved over several
rounds (median per configuration, so machine noise hits all alike):

* the student alone: the embedder compiled with ``TripletHardLoss`` (plain ``compile``/``fit``);
* the Distiller ``ml+rel`` (triplet + relative teacher) on the same student, batch and size;
* the teacher's inference on the same batch (a ``tf.function`` of ``teacher(x, training=False)``).

It prints the ratio, the bound, and the teacher's share of the Distiller step.

Usage: ``python benchmarks/distill_overhead.py [--batch 32] [--size 64] [--steps 10] [--rounds 3]``
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.losses import TripletHardLoss  # noqa: E402
from tfembed.distill import Distiller  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b, s = args.batch, args.size

    keras.utils.set_random_seed(0)
    teacher = build_embedder("resnet101", 512, (s, s, 3), name="teacher")
    student_weights = build_embedder("resnet18", 512, (s, s, 3)).get_weights()

    def student():
        model = build_embedder("resnet18", 512, (s, s, 3), name="student")
        model.set_weights(student_weights)
        return model

    alone = student()
    alone.compile(optimizer=keras.optimizers.Adam(1e-5), loss=TripletHardLoss(margin=0.2),
                  jit_compile=False)
    alone.optimizer.build(alone.trainable_variables)
    distiller = Distiller(teacher, student(), "relative_teacher",
                          metric_loss=TripletHardLoss(margin=0.2))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-5), jit_compile=False)
    infer = tf.function(lambda x: teacher(x, training=False))

    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32)),
                tf.constant(np.repeat(np.arange(b // 4), 4).astype(np.int64)))
               for _ in range(4)]
    # train_on_batch runs the same compiled train function as fit, one step per call, on
    # batches already in memory: no input pipeline in the measurement.
    runs = {
        "student alone": lambda x, y: alone.train_on_batch(x, y),
        "distiller": lambda x, y: distiller.train_on_batch(x, y),
        "teacher inference": lambda x, y: infer(x).numpy(),
    }
    for fn in runs.values():  # trace and warm up
        time_per_step(fn, batches, 3)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(time_per_step(fn, batches, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["distiller"] / med["student alone"]
    bound = 1 + med["teacher inference"] / med["student alone"] + 0.1
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"teacher ResNet-101, student ResNet-18, 512-d, {s}x{s}, batch {b}; "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    for name, value in med.items():
        print(f"  {name:>17}: {1000 * value:7.1f} ms  (rounds: "
              + ", ".join(f"{1000 * t:.1f}" for t in times[name]) + ")")
    print(f"ratio distiller / student alone: {ratio:.3f}  "
          f"(bound 1 + teacher/student + 0.1 = {bound:.3f}; "
          f"{'within' if ratio <= bound else 'ABOVE'} the bound)")
    print(f"teacher share of the distiller step: {med['teacher inference'] / med['distiller']:.3f}")


if __name__ == "__main__":
    main()
