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


@pytest.fixture(scope="session")
def paper_data_dir(tmp_path_factory):
    """Miniature copies of every on-disk dataset layout, shared by the recipe smoke tests."""
    from tfembed.data import testing

    root = tmp_path_factory.mktemp("datasets")
    testing.make_cub_layout(root / "CUB_200_2011", per_class=4)
    testing.make_cars_layout(root / "cars196", per_class=4)
    testing.make_sop_layout(root / "Stanford_Online_Products", per_class=4)
    testing.make_inshop_layout(root / "inshop", per_item=4)
    testing.make_vehicleid_layout(root / "VehicleID_V1.0")
    testing.make_imagenet_layout(root / "ILSVRC2012", num_classes=3, train_per_class=4,
                                 val_per_class=2, rng=np.random.default_rng(0))
    return root


# --set overrides that put a demo recipe on the small CNN from scratch (28-px crops), for tests
# that use a demo only as a vehicle for the machinery (seeds, resume, the CLI): the demos'
# pretrained EfficientNet at 64 px costs several times more per step.
SMALL_CNN = ["model.backbone=small_cnn", "model.weights=", "model.image_size=28",
             "model.resize_size=32", "model.freeze_batchnorm=false"]


@pytest.fixture
def run_recipe():
    """``run_recipe(recipe, workdir, *sets)``: tfembed-train in smoke mode → the report dict."""
    import json

    import keras

    from tfembed import cli

    def run(recipe, workdir, *sets):
        keras.backend.clear_session()
        argv = ["tfembed-train", "--recipe", recipe, "--workdir", str(workdir),
                "--set", "smoke=true", *[a for s in sets for a in ("--set", s)]]
        assert cli.train_main(argv) == 0
        with open(os.path.join(workdir, "report.json")) as f:
            return json.load(f)

    return run
