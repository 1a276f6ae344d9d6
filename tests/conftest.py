"""Test set-up: two logical CPU devices, so MirroredStrategy paths run with 2 replicas.

The logical device configuration must happen before TensorFlow initialises its runtime, i.e.
before any op runs; pytest imports this file first.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Deterministic kernels make "same weights after resume" style assertions meaningful.
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised (e.g. an interactive session); keep what exists
    pass


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def two_replica_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest must configure 2 logical CPU devices"
    return tf.distribute.MirroredStrategy(devices)
