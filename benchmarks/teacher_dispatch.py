"""Benchmark: a UniversalDistiller step with 4 teachers costs what a step with 1 teacher does.

Only the teacher of the batch's domain runs (``tf.switch_case`` on the domain id, DESIGN §5), so
adding domains must not add teacher forward passes. The script builds 4 teachers of the same
architecture (ResNet-18, the heavier model of the pair) and a small-CNN student, and times
``fit`` steps of

* ``UniversalDistiller([t0, t1, t2, t3], student)`` on batches whose domain cycles 0, 1, 2, 3;
* ``UniversalDistiller([t0], student)`` on the same images with domain 0,

interleaving them (several rounds, the median per configuration) so machine noise hits both
alike. It prints the ratio time(4 teachers) / time(1 teacher); the goal is <= 1.15. As a control
that the measurement can see a difference, it also times a distiller that runs every teacher on
every batch and keeps the batch domain's output (what a switch-free implementation costs).

Usage: ``python benchmarks/teacher_dispatch.py [--batch 32] [--size 64] [--steps 20] [--rounds 3]``
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.losses import SNDLoss  # noqa: E402
from tfembed.universal import UniversalDistiller  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model  # noqa: E402


def _batches(images, domains):
    labels = np.zeros(domains.shape[1:], np.int64)
    return [({"images": tf.constant(x), "domain": tf.constant(d)}, tf.constant(labels))
            for x, d in zip(images, domains)]


class _AllTeachers(UniversalDistiller):
    """Control: every teacher runs, the batch domain's output is selected afterwards."""

    def teacher_targets(self, inputs, domain=None):
        images = inputs["images"]
        outs = tf.stack([tf.cast(t(images, training=False), tf.float32) for t in self.teachers])
        return {}, tf.stop_gradient(tf.gather(outs, domain))


def _distiller(teachers, student_weights, size, cls=UniversalDistiller):
    keras.utils.set_random_seed(1)
    student = build_embedder("small_cnn", 128, (size, size, 3), name="student")
    student.set_weights(student_weights)
    model = cls(teachers, student, SNDLoss(sigma=0.25))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=False)
    return model


def _time_steps(model, batches, steps):
    # train_on_batch runs the same compiled train_function as fit, one step per call, on batches
    # already in memory: no input pipeline in the measurement.
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teachers", type=int, default=4)
    args = parser.parse_args()

    m, b, s = args.teachers, args.batch, args.size
    teachers = []
    for i in range(m):
        keras.utils.set_random_seed(100 + i)
        teachers.append(build_embedder("resnet18", 128, (s, s, 3), name=f"teacher{i}"))
    keras.utils.set_random_seed(0)
    student_weights = build_embedder("small_cnn", 128, (s, s, 3)).get_weights()

    rng = np.random.default_rng(0)
    batches = 8
    images = rng.uniform(0, 255, (batches, b, s, s, 3)).astype(np.float32)
    many_domains = np.repeat(np.arange(batches) % m, b).reshape(batches, b).astype(np.int32)
    one_domain = np.zeros_like(many_domains)
    runs = {
        f"{m} teachers": (_distiller(teachers, student_weights, s),
                          _batches(images, many_domains)),
        "1 teacher": (_distiller(teachers[:1], student_weights, s), _batches(images, one_domain)),
        "control": (_distiller(teachers, student_weights, s, _AllTeachers),
                    _batches(images, many_domains)),
    }
    for model, ds in runs.values():  # trace and warm up both graphs first
        _time_steps(model, ds, max(2, batches))
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, ds) in runs.items():
            times[name].append(_time_steps(model, ds, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med[f"{m} teachers"] / med["1 teacher"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"teachers: ResNet-18 {s}x{s}, student: small CNN; batch {b}; "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    for name, value in med.items():
        print(f"  {name:>11}: {1000 * value:7.1f} ms/step  (rounds: "
              + ", ".join(f"{1000 * t:.1f}" for t in times[name]) + ")")
    print(f"ratio {m} teachers / 1 teacher: {ratio:.3f}  (goal <= 1.15)")
    print(f"control, all {m} teachers run every step / 1 teacher: "
          f"{med['control'] / med['1 teacher']:.3f}")


if __name__ == "__main__":
    main()
