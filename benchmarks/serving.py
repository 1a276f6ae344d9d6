"""Benchmark: SavedModel serving throughput against in-process ``model.predict`` (issue 7).

Does exporting cost inference speed? The script builds an embedder (``--backbone`` resnet18,
``--size`` 64 px, ``--dim`` 128, weights=None), exports it with tfembed's own exporter
(``tfembed.export.export_model`` into a temporary directory, deleted afterwards), loads the
SavedModel back with ``tf.saved_model.load`` and times, on the same in-memory batches
(``--batches`` batches of ``--batch`` images, pixel values drawn as uint8 and fed as float32 in
0..255: the exported ``serving_pixels`` signature's input ``pixels: float32 [batch, size, size,
3]``), interleaved over ``--rounds`` rounds (median per way, so machine noise hits all alike):

* ``serving_pixels``: the loaded SavedModel's ``signatures["serving_pixels"](pixels=batch)``, the
  embeddings fetched as numpy;
* ``model.predict(batch, batch_size=len(batch), verbose=0)`` (the whole batch in one predict step,
  numpy out);
* reference: a direct ``model(batch, training=False)`` call (eager), numpy out;
* informational, not in the ratio: the ``serving_default`` signature (what a REST client calls) on
  the same number of JPEG-encoded images (``--resize`` px, quality 90): it adds in-graph JPEG
  decoding, resize and centre crop, so it is not the same work.

It prints images/s per way, the headline RATIO serving_pixels ÷ predict (images/s; goal ≥ 0.9),
and the largest absolute difference between the served and the predicted embeddings (and the
direct call's), which should be float round-off (~1e-6).

Usage: ``python benchmarks/serving.py [--backbone resnet18] [--size 64] [--resize 73] [--dim 128]
[--batch 32] [--batches 8] [--rounds 5]`` (quick check: ``--backbone small_cnn --size 32
--resize 37 --batch 8 --batches 2 --rounds 1``)

Measured (docs/benchmarks.md), 2 CPU cores, defaults: serving_pixels ÷ model.predict 1.83
(images/s; serving_default with in-graph JPEG decoding 1.70), embeddings equal.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.export import IMAGES_SIGNATURE, PIXELS_SIGNATURE, export_model  # noqa: E402
from tfembed.models import build_embedder  # noqa: E402

# Run as a script, benchmarks/ is on sys.path: share the machine description with recall.py.
from recall import cpu_model  # noqa: E402


def time_batches(fn, batches):
    """Seconds for ``fn(batch)`` over every batch once."""
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--resize", type=int, default=73,
                        help="export resize_size (serving_default resizes to this, then crops)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-jpeg", action="store_true", help="skip the serving_default row")
    args = parser.parse_args()
    s, b = args.size, args.batch
    start = time.perf_counter()

    keras.utils.set_random_seed(0)
    model = build_embedder(args.backbone, args.dim, input_shape=(s, s, 3), weights=None)
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8).astype(np.float32)
              for _ in range(args.batches)]
    tensors = [tf.constant(x) for x in pixels]
    jpegs = []
    if not args.no_jpeg:
        for _ in range(args.batches):
            raw = rng.integers(0, 256, (b, args.resize, args.resize, 3), dtype=np.uint8)
            jpegs.append(tf.constant([tf.io.encode_jpeg(im, quality=90).numpy() for im in raw]))

    with tempfile.TemporaryDirectory(prefix="tfembed-serving-") as root:
        t0 = time.perf_counter()
        version_dir = export_model(model, root, "embedder", image_size=(s, s),
                                   resize_size=(args.resize, args.resize))
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = tf.saved_model.load(version_dir)
        load_s = time.perf_counter() - t0
        serve_pixels = loaded.signatures[PIXELS_SIGNATURE]
        serve_images = loaded.signatures[IMAGES_SIGNATURE]

        ways = {
            "serving_pixels": lambda x: serve_pixels(pixels=x)["embeddings"].numpy(),
            "model.predict": lambda x: model.predict(x, batch_size=b, verbose=0),
            "model(x) direct": lambda x: model(x, training=False).numpy(),
        }
        inputs = {name: tensors for name in ways}
        if jpegs:
            ways["serving_default (JPEG)"] = (
                lambda x: serve_images(images=x)["embeddings"].numpy())
            inputs["serving_default (JPEG)"] = jpegs

        reference = model.predict(tensors[0], batch_size=b, verbose=0)
        diffs = {
            "serving_pixels": float(np.max(np.abs(ways["serving_pixels"](tensors[0]) - reference))),
            "model(x) direct": float(np.max(np.abs(ways["model(x) direct"](tensors[0])
                                                   - reference))),
        }
        out_dtype = serve_pixels(pixels=tensors[0])["embeddings"].dtype.name
        for name, fn in ways.items():  # warm-up (tracing, thread pools)
            time_batches(fn, inputs[name][:2])
        times = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, fn in ways.items():
                times[name].append(time_batches(fn, inputs[name]))

    n_images = b * args.batches
    med = {name: statistics.median(t) for name, t in times.items()}
    rate = {name: n_images / t for name, t in med.items()}
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; TF {tf.__version__}, "
          f"Keras {keras.__version__}; load {os.getloadavg()[0]:.1f} (1-min average at the end)")
    print(f"{args.backbone} embedder {s}x{s}, {args.dim}-d, weights=None; {args.batches} batches "
          f"of {b} per round, {args.rounds} rounds (median); export {export_s:.1f} s, "
          f"load {load_s:.1f} s; serving output dtype {out_dtype}")
    header = (f"{'way':>22} | {'images/s':>9} | {'ms/batch':>8} | {'÷ predict':>9} | "
              "rounds (images/s)")
    print(header)
    print("-" * len(header))
    for name in ways:
        print(f"{name:>22} | {rate[name]:>9.1f} | {1000 * med[name] / args.batches:>8.1f} | "
              f"{rate[name] / rate['model.predict']:>9.2f} | "
              + ", ".join(f"{n_images / t:.0f}" for t in times[name]))
    print("max |embedding - predict|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    ratio = rate["serving_pixels"] / rate["model.predict"]
    print(f"RATIO serving_pixels / model.predict images/s = {ratio:.2f} "
          f"(goal >= 0.9: {'MET' if ratio >= 0.9 else 'NOT MET'})")
    print(f"total run time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
