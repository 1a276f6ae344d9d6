"""Choosing the tf.distribute strategy for a run.

``default`` is the sensible choice for the machine: MirroredStrategy over all visible GPUs when
there is more than one, else the default (single-device) strategy. ``mirrored`` forces
MirroredStrategy over every visible GPU (or every logical CPU device when there is no GPU, which
is how the tests run 2 replicas on one CPU).
"""

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "one_device")


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Returns the strategy named by a recipe's ``strategy`` key."""
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
