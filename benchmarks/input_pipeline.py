"""Benchmark: the JPEG training input pipeline's images/s against the training step's (issue 7).

Can ``tfembed.data.training_batches`` feed a training step from a folder of JPEGs
without making it wait? The script writes a class-per-folder dataset of random-texture JPEGs
(``--classes`` 40 × ``--per-class`` 25 images of ``--image`` 256×256 px, quality 90: a smooth
random colour field plus fine noise, ~20-30 KB each like photos of that size) into a temporary
directory (deleted afterwards; ``--data DIR`` reads an existing folder instead), lists it with
``tfembed.data.sources.read_folder`` (``test_fraction=0``: every class in the training split) and
builds the pipeline at recipe-like settings: ``training_batches([domain.train], 8, 4,
spec=ImageSpec(64, 73), seed=0)`` (batch 32 = 8 classes × 4 images; read file,
decode JPEG, anti-aliased resize, random crop, random flip, per image; ``--size 224 --resize
256`` for the ImageNet-size transform). Interleaved over ``--rounds`` rounds (median per way), it
times:

* ``pipeline``: iterating the pipeline alone (a fresh iterator per round, ``--warmup`` batches
  dropped, then ``--pipeline-batches`` batches timed), images/s;
* ``train step``: a ResNet-18 embedder (128-d, weights=None, ``TripletSemiHardLoss``, Adam,
  ``compile(jit_compile=False)``) ``train_on_batch`` on in-memory batches of the same shape,
  images/s;
* ``train fed by pipeline``: the same step on ``next(iterator)`` of the pipeline (a fresh
  iterator per round, ``--warmup`` steps untimed while tf.data fills its prefetch buffers): the
  end-to-end rate, where pipeline and step share the cores;

and, to show where the pipeline's time goes (informational; built here from the same file list
with the same parallelism, not the library's code): reading the files only, reading +
``decode_image``, and reading + decoding + the transform's anti-aliased float resize (the rest of
the pipeline: index sampling, random crop, flip, batching). It prints images/s per way and the
headline RATIO pipeline ÷ train step (images/s; goal ≥ 2), plus train-fed-by-pipeline ÷ train
step (1.0 = the step never waits). ``--threadpool N`` adds the pipeline alone and feeding the
step with tf.data's ``threading.private_threadpool_size = N`` (the pipeline's threads kept to a
pool of N); off by default: in a short probe at 64 px it made no difference within the noise.

Usage: ``python benchmarks/input_pipeline.py [--classes 40] [--per-class 25] [--image 256]
[--size 64] [--resize 73] [--classes-per-batch 8] [--images-per-class 4] [--pipeline-batches 60]
[--steps 5] [--rounds 3] [--threadpool 0] [--data DIR]`` (also ``--size 224 --resize 256``;
quick check: ``--classes 8 --per-class 4 --image 96 --size 32 --resize 37 --pipeline-batches 5
--steps 1 --rounds 1``)

Measured (docs/benchmarks.md), 2 CPU cores, defaults: the pipeline delivers 860 images/s, the
ResNet-18 step consumes 72: ratio 11.9 (goal ≥ 2); pipeline-fed training at 0.91 of in-memory.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tfembed.data.pipeline import training_batches  # noqa: E402
from tfembed.data.sources import read_folder  # noqa: E402
from tfembed.data.transforms import decode_image  # noqa: E402
from tfembed.data.types import ImageSpec  # noqa: E402
from tfembed.losses import TripletSemiHardLoss  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model, time_per_step  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE


def texture_image(rng, size=(256, 256), cells=8, noise=8.0):
    """A ``uint8 [H, W, 3]`` random texture: a ``cells`` × ``cells`` random colour field resized
    (bicubic) to ``size`` plus Gaussian pixel noise of std ``noise``; JPEG-compresses about as
    well as a photo of that size (smooth regions and fine detail)."""
    h, w = size
    coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
    field += rng.normal(0.0, noise, field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def write_jpeg_folder(root, num_classes=40, per_class=25, size=(256, 256), quality=90, seed=0):
    """Write ``root/class_XXX/img_YYY.jpg`` (``num_classes`` × ``per_class`` random-texture JPEGs
    of ``size`` = (height, width)); returns ``(Path(root), total bytes written)``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    total = 0
    for c in range(num_classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            path = folder / f"img_{k:03d}.jpg"
            Image.fromarray(texture_image(rng, size)).save(path, "JPEG", quality=quality)
            total += path.stat().st_size
    return root, total


def time_iterator(iterator, batches):
    """Seconds to pull ``batches`` elements from ``iterator``."""
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="an existing class-per-folder directory")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--image", type=int, default=256, help="side of the written JPEGs")
    parser.add_argument("--size", type=int, default=64, help="training crop (image_size)")
    parser.add_argument("--resize", type=int, default=73, help="resize_size before the crop")
    parser.add_argument("--classes-per-batch", type=int, default=8)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--pipeline-batches", type=int, default=60,
                        help="batches timed per round, pipeline alone")
    parser.add_argument("--warmup", type=int, default=5,
                        help="batches (steps, when training) dropped per iterator")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threadpool", type=int, default=0,
                        help="also time the pipeline (alone and feeding the step) with "
                             "tf.data.Options().threading.private_threadpool_size = N")
    args = parser.parse_args()
    s, r = args.size, args.resize
    b = args.classes_per_batch * args.images_per_class
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")

    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="tfembed-jpegs-")
        t0 = time.perf_counter()
        root, nbytes = write_jpeg_folder(tmp, args.classes, args.per_class,
                                         (args.image, args.image))
        written = (f"wrote {args.classes} x {args.per_class} JPEGs of {args.image}x{args.image} "
                   f"(mean {nbytes / (args.classes * args.per_class) / 1024:.1f} KiB) in "
                   f"{time.perf_counter() - t0:.1f} s")
    else:
        root, written = Path(args.data), f"read {args.data}"
    try:
        domain = read_folder(root, test_fraction=0.0)
        split = domain.train
        pipeline = training_batches([split], args.classes_per_batch, args.images_per_class,
                                    spec=ImageSpec(s, r), seed=0)

        paths = tf.constant([str(p) for p in split.paths])

        def stage_dataset(fn):
            ds = tf.data.Dataset.range(len(split)).repeat().map(
                lambda i: fn(tf.io.read_file(tf.gather(paths, i))),
                num_parallel_calls=AUTOTUNE, deterministic=True)
            return ds.batch(b, drop_remainder=True).prefetch(AUTOTUNE)

        stages = {
            "read files only": stage_dataset(lambda raw: tf.strings.length(raw)),
            # Each stage returns something computed from every pixel: tf.data's graph optimizer
            # would otherwise prune work whose result is not used (e.g. a static-shape resize).
            "read + decode": stage_dataset(lambda raw: tf.reduce_max(decode_image(raw))),
            "read + decode + resize": stage_dataset(lambda raw: tf.image.resize(
                tf.cast(decode_image(raw), tf.float32), (r, r), antialias=True)),
        }

        keras.utils.set_random_seed(0)
        model = build_embedder(args.backbone, 128, input_shape=(s, s, 3), weights=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=TripletSemiHardLoss(),
                      jit_compile=False)
        warm = iter(pipeline)
        memory = [tuple(tf.identity(t) for t in next(warm)) for _ in range(2)]  # real batches
        del warm
        time_per_step(model.train_on_batch, memory, 2)  # trace and warm up

        def pipeline_alone(ds):
            iterator = iter(ds)
            time_iterator(iterator, args.warmup)
            return time_iterator(iterator, args.pipeline_batches) / args.pipeline_batches

        def fed_by_pipeline(ds=pipeline):
            iterator = iter(ds)
            for _ in range(args.warmup):  # warm-up steps: let tf.data fill its buffers first
                model.train_on_batch(*next(iterator))
            begin = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(*next(iterator))
            return (time.perf_counter() - begin) / args.steps

        ways = {
            "pipeline": lambda: pipeline_alone(pipeline),
            "train step (in memory)": lambda: time_per_step(model.train_on_batch, memory,
                                                            args.steps),
            "train fed by pipeline": fed_by_pipeline,
        }
        if args.threadpool:
            options = tf.data.Options()
            options.threading.private_threadpool_size = args.threadpool
            limited = pipeline.with_options(options)
            ways[f"pipeline (pool {args.threadpool})"] = lambda: pipeline_alone(limited)
            ways[f"train fed (pool {args.threadpool})"] = lambda: fed_by_pipeline(limited)
        ways.update({name: (lambda ds=ds: pipeline_alone(ds)) for name, ds in stages.items()})
        times = {name: [] for name in ways}  # seconds per batch
        for _ in range(args.rounds):
            for name, fn in ways.items():
                times[name].append(fn())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    rate = {name: b / statistics.median(t) for name, t in times.items()}
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}; load {os.getloadavg()[0]:.1f} (1-min average at the end)")
    print(f"data: {written}; {len(split)} training images in {len(split.classes)} classes")
    print(f"pipeline: training_batches c={args.classes_per_batch} x k={args.images_per_class} = "
          f"batch {b}, resize {r}x{r} -> crop {s}x{s} + flip; {args.pipeline_batches} batches "
          f"per round after {args.warmup} warm-up; train step: {args.backbone} 128-d, Adam, "
          f"TripletSemiHardLoss, {args.steps} steps per round; {args.rounds} rounds (median)")
    header = (f"{'way':>24} | {'images/s':>9} | {'ms/batch':>8} | {'÷ train':>7} | "
              "rounds (images/s)")
    print(header)
    print("-" * len(header))
    train = rate["train step (in memory)"]
    for name in ways:
        print(f"{name:>24} | {rate[name]:>9.1f} | {1000 * b / rate[name]:>8.1f} | "
              f"{rate[name] / train:>7.2f} | " + ", ".join(f"{b / t:.0f}" for t in times[name]))
    ratio = rate["pipeline"] / train
    print(f"RATIO pipeline / train step images/s = {ratio:.2f} "
          f"(goal >= 2: {'MET' if ratio >= 2 else 'NOT MET'})")
    print(f"train fed by pipeline / train step in memory = "
          f"{rate['train fed by pipeline'] / train:.2f} (1.0: the step never waits for data)")
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
