"""Choosing the tf.distribute strategy and the numerics of a run.

``strategy`` (a recipe's top-level key):

* ``default``: MirroredStrategy over all visible GPUs when there is more than one, else the
  default (single-device) strategy;
* ``mirrored``: MirroredStrategy over every visible GPU (or every logical CPU device when there is
  no GPU, which is how the tests run 2 replicas on one CPU);
* ``multi_worker``: MultiWorkerMirroredStrategy over the cluster described by the ``TF_CONFIG``
  environment variable (every worker runs the same command; see README "Distribution");
* ``one_device``: the first GPU, else the CPU.

Batch sizes in recipes are global: Keras splits each batch over the replicas, and the trainers
gather what a pairwise loss needs back into the global batch.

``precision``: ``float32``, ``mixed_bfloat16`` or ``mixed_float16`` (Keras' global dtype policy:
layers compute in 16 bits, variables stay float32; tfembed's losses cast embeddings to float32;
``mixed_float16`` gets dynamic loss scaling from Keras' ``LossScaleOptimizer``, which ``compile``
wraps around the optimizer under that policy).
"""

import contextlib
import json
import os

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# MultiWorkerMirroredStrategy must be created once per process, before other collective ops:
# every pipeline of a run asks for the strategy, so it is kept.
_MULTI_WORKER = []


def _multi_worker():
    if not _MULTI_WORKER:
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy=multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set (see README "
                             "'Distribution')")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Returns the strategy named by a recipe's ``strategy`` key."""
    if name == "multi_worker":
        # First: collectives must be configured before anything initialises the runtime
        # (listing the logical devices below would).
        strategy = _multi_worker()
        logging.info("strategy %s with %d replica(s)", type(strategy).__name__,
                     strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
        else:
            strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy((gpus[0] if gpus else tf.config.list_logical_devices("CPU")[0]).name)
    else:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    logging.info("strategy %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


@contextlib.contextmanager
def precision(name: str = "float32"):
    """Within the block, Keras' global dtype policy is ``name`` (restored afterwards)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
