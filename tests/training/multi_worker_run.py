"""One worker of the two-process MultiWorkerMirroredStrategy test (tests/training/test_multi_worker.py).

Usage: ``TF_CONFIG=... python tests/training/multi_worker_run.py RUN_DIR OUT.npz``. Trains a small embedder
with a global-batch triplet loss through ``fit_for_steps`` (checkpoints every 2 steps) on a
stream that is a pure function of the step, then a UniversalDistiller (two frozen teachers, SND
on the gathered batch) the same way, and saves the final weights of both.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.losses import GlobalBatchLoss, SNDLoss, TripletSemiHardLoss  # noqa: E402
from tfembed.universal import UniversalDistiller  # noqa: E402
from tfembed.training.loop import fit_for_steps  # noqa: E402
from tfembed.training.strategy import get_strategy  # noqa: E402

STEPS, GLOBAL_BATCH = 6, 8


def stream(start_step=0):
    return tf.data.Dataset.counter(start_step).map(stream_batch)


def domain_stream(start_step=0):
    def batch(step):
        x, y = stream_batch(step)
        return {"images": x, "domain": tf.fill([GLOBAL_BATCH], tf.cast(step % 2, tf.int32))}, y
    return tf.data.Dataset.counter(start_step).map(batch)


def stream_batch(step):
    x = tf.random.stateless_normal([GLOBAL_BATCH, 4], tf.stack([step, tf.constant(7, tf.int64)]))
    return x, tf.constant([0, 0, 1, 1, 2, 2, 3, 3], tf.int64)


def embedder(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(3)(x)))


def build_distiller():
    model = UniversalDistiller([embedder(2), embedder(3)], embedder(1), SNDLoss(sigma=0.5))
    model.compile(keras.optimizers.SGD(0.5), jit_compile=False)
    return model


def build():
    model = embedder(0)
    model.compile(keras.optimizers.SGD(0.5), loss=GlobalBatchLoss(TripletSemiHardLoss(0.2)),
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return model


def main(run_dir, out):
    strategy = get_strategy("multi_worker" if "TF_CONFIG" in os.environ else "default")
    with strategy.scope():
        model = build()
        distiller = build_distiller()
    initial = [w.numpy() for w in model.weights + distiller.student.weights]
    fit_for_steps(model, stream, STEPS, 3, run_dir, None, what="multi-worker test",
                  batch_size=GLOBAL_BATCH, checkpoint_every=2)
    fit_for_steps(distiller, domain_stream, 4, 2, os.path.join(run_dir, "distiller"), None,
                  what="multi-worker distiller", batch_size=GLOBAL_BATCH)
    final = model.weights + distiller.student.weights
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": w.numpy() for i, w in enumerate(final)},
             **{f"init{i}": w for i, w in enumerate(initial)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
