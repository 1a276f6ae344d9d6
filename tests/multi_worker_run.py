"""One worker of the two-process MultiWorkerMirroredStrategy test (tests/test_multi_worker.py).

Usage: ``TF_CONFIG=... python tests/multi_worker_run.py RUN_DIR OUT.npz``. Trains a small embedder
with a global-batch triplet loss through ``fit_for_steps`` (checkpoints every 2 steps) on a
stream that is a pure function of the step, then saves the final weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfembed.losses import GlobalBatchLoss, TripletSemiHardLoss  # noqa: E402
from tfembed.training.specialist import fit_for_steps  # noqa: E402
from tfembed.training.strategy import get_strategy  # noqa: E402

STEPS, GLOBAL_BATCH = 6, 8


def stream(start_step=0):
    def batch(step):
        x = tf.random.stateless_normal([GLOBAL_BATCH, 4], tf.stack([step, tf.constant(7, tf.int64)]))
        return x, tf.constant([0, 0, 1, 1, 2, 2, 3, 3], tf.int64)
    return tf.data.Dataset.counter(start_step).map(batch)


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(3)(x)))
    model.compile(keras.optimizers.SGD(0.5), loss=GlobalBatchLoss(TripletSemiHardLoss(0.2)),
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return model


def main(run_dir, out):
    strategy = get_strategy("multi_worker" if "TF_CONFIG" in os.environ else "default")
    with strategy.scope():
        model = build()
    fit_for_steps(model, stream, STEPS, 3, run_dir, None, what="multi-worker test",
                  batch_size=GLOBAL_BATCH, checkpoint_every=2)
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": w.numpy() for i, w in enumerate(model.weights)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
