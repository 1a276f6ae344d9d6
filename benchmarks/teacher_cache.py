"""Benchmark: a distillation step reading a TeacherCache ÷ the same step running the teacher.

With a cache (``TeacherCache``, ``teacher_cache.mode``) the step is the student's forward and
backward pass plus a gather; live, it also runs the batch domain's teacher forward. The script
builds two ResNet teachers and a ResNet student (``--teacher``, ``--student``; ResNet-18 at
64 px by default), fills a cache with the teachers' embeddings of fixed in-memory batches
(timing that one-off cost too) and times ``UniversalDistiller`` steps on the same batches with
live teachers and with the cache, interleaved over several rounds (median per configuration).

It prints step time cached ÷ live (lower is better: the fraction of the step the cache keeps)
and the break-even point: the number of steps after which the up-front cache computation has
paid for itself, in passes over the cached images. There is no goal in the issue; the expected
ratio for a teacher as large as the student is about 2/3 (one forward of three passes saved).

Usage: ``python benchmarks/teacher_cache.py [--batch 32] [--size 64] [--steps 20] [--rounds 3]``
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
from tfembed.distill import TeacherCache  # noqa: E402
from tfembed.universal import UniversalDistiller  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path.
from recall import cpu_model  # noqa: E402
from teacher_dispatch import _time_steps  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--domains", type=int, default=2)
    args = parser.parse_args()

    m, b, s = args.domains, args.batch, args.size
    batches_per_domain = 4
    teachers = []
    for d in range(m):
        keras.utils.set_random_seed(100 + d)
        teachers.append(build_embedder(args.teacher, 128, (s, s, 3), name=f"teacher{d}"))
    keras.utils.set_random_seed(0)
    student_weights = build_embedder(args.student, 128, (s, s, 3)).get_weights()

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (m, batches_per_domain * b, s, s, 3)).astype(np.float32)

    # The cache: every domain's images through its teacher, once (views=0: one view each).
    for d in range(m):   # trace the predict functions outside the timing
        teachers[d].predict(images[d, :b], batch_size=b, verbose=0)
    start = time.perf_counter()
    tables = [teachers[d].predict(images[d], batch_size=b, verbose=0)[:, None, :]
              for d in range(m)]
    cache_seconds = time.perf_counter() - start
    cache = TeacherCache(tables, 0)

    batches = []
    for i in range(batches_per_domain):
        for d in range(m):
            rows = np.arange(i * b, (i + 1) * b)
            x = {"images": tf.constant(images[d, rows]), "domain": tf.fill([b], d),
                 "example": tf.constant(rows, tf.int64), "view": tf.zeros([b], tf.int32)}
            batches.append((x, tf.zeros([b], tf.int64)))

    def distiller(source):
        student = build_embedder(args.student, 128, (s, s, 3), name="student")
        student.set_weights(student_weights)
        model = UniversalDistiller(source, student, SNDLoss(sigma=0.25))
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        return model

    runs = {"live": distiller(teachers), "cached": distiller(cache)}
    for model in runs.values():   # trace and warm up first
        _time_steps(model, batches, len(batches))
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, model in runs.items():
            times[name].append(_time_steps(model, batches, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["cached"] / med["live"]
    cached_images = m * batches_per_domain * b
    saved_per_step = med["live"] - med["cached"]
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"teachers: {m} x {args.teacher}, student: {args.student}, {s}x{s}, batch {b}; "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    for name, value in med.items():
        print(f"  {name:>6}: {1000 * value:7.1f} ms/step  (rounds: "
              + ", ".join(f"{1000 * t:.1f}" for t in times[name]) + ")")
    print(f"cache computation: {cache_seconds:.2f} s for {cached_images} images "
          f"({1000 * cache_seconds / cached_images:.2f} ms/image)")
    if saved_per_step > 0:
        steps = cache_seconds / saved_per_step
        print(f"break-even after {steps:.0f} steps = {steps * b / cached_images:.2f} passes "
              "over the cached images")
    print(f"ratio cached / live step time: {ratio:.3f}")


if __name__ == "__main__":
    main()
