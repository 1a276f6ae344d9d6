"""Backbone registry, embedders, feature models, saving/loading (tfembed.models)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfembed.models import (
    BACKBONES,
    Preprocess,
    backbone_model,
    backbone_spec_of,
    build_backbone,
    build_embedder,
    feature_model,
    load_embedder,
    register_backbone,
)

SHAPES = {"small_cnn": (32, 32, 3)}
DEFAULT_SHAPE = (64, 64, 3)


def _pixels(rng, n, shape):
    return (rng.random((n,) + tuple(shape)) * 255.0).astype("float32")


# --------------------------------------------------------------------------------------------
# registry


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_unit_norm_float32(name, rng):
    # The smallest size the backbone accepts (32 for most keras.applications): keeps this fast.
    side = BACKBONES[name].spec.min_size
    shape = (side, side, 3)
    model = build_embedder(name, embedding_dim=24, input_shape=shape)
    assert model.name == f"embedder_{name}"
    assert model.output.shape == (None, 24)
    # training=True: BatchNorm on batch statistics. A randomly initialised keras MobileNet's
    # activations decay to ~1e-20 through 13 blocks in inference mode (its initialisers are not
    # variance-preserving), which leaves nothing to normalise.
    out = model(_pixels(rng, 2, shape), training=True)
    assert out.shape == (2, 24)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-5)
    spec = BACKBONES[name].spec
    for layer_name in list(spec.stages.values()) + [spec.default_branch]:
        model.get_layer(layer_name)  # stage layers are reachable in the outer graph


def test_unknown_backbone_lists_registered():
    with pytest.raises(ValueError, match="resnet18"):
        build_embedder("resnet7", input_shape=DEFAULT_SHAPE)


def test_register_backbone_and_build_backbone():
    @register_backbone("_tiny_test", {"preprocess": "unit", "stages": {"stage1": "tiny_conv"},
                                      "default_branch": "tiny_conv"})
    def _tiny(x, weights=None):
        return keras.layers.Conv2D(4, 3, strides=2, padding="same", name="tiny_conv")(x)

    try:
        inputs = keras.Input((16, 16, 1))
        features, spec = build_backbone("_tiny_test", inputs)
        assert features.shape == (None, 8, 8, 4) and spec.name == "_tiny_test"
        model = build_embedder("_tiny_test", embedding_dim=3, input_shape=(16, 16, 1))
        assert [o.shape for o in feature_model(model, ["stage1"]).outputs] == [
            (None, 8, 8, 4), (None, 3)]
    finally:
        BACKBONES.pop("_tiny_test", None)


def test_pooling_options_and_mixed_precision(rng):
    x = _pixels(rng, 2, (32, 32, 1))
    for pooling in ("avg", "max", "gem"):
        model = build_embedder("small_cnn", 8, (32, 32, 1), pooling=pooling, width=0.25)
        out = model(x)
        np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        build_embedder("small_cnn", 8, (32, 32, 1), pooling="sum")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_embedder("small_cnn", 8, (32, 32, 3), width=0.25)
        assert model.get_layer("stage1_conv1").compute_dtype == "float16"
        out = model(_pixels(rng, 2, (32, 32, 3)))
        assert out.dtype == tf.float32
        np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------------------------
# architectures


def _basic_resnet_param_count(blocks):
    """Trainable parameters of a torchvision-style basic-block ResNet without fc (3-ch input)."""
    bn = lambda c: 2 * c  # noqa: E731  (gamma, beta)
    total = 7 * 7 * 3 * 64 + bn(64)
    c_in = 64
    for stage, (n, c) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            total += 3 * 3 * c_in * c + bn(c) + 3 * 3 * c * c + bn(c)
            if stride != 1 or c_in != c:
                total += c_in * c + bn(c)
            c_in = c
    return total


@pytest.mark.parametrize("name,blocks,expected", [
    ("resnet18", (2, 2, 2, 2), 11_176_512),
    ("resnet34", (3, 4, 6, 3), 21_284_672),
])
def test_basic_resnet_parameter_count_and_strides(name, blocks, expected):
    assert _basic_resnet_param_count(blocks) == expected  # the torchvision numbers minus fc
    model = build_embedder(name, 16, DEFAULT_SHAPE)
    head = model.get_layer("embedding_dense").count_params()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable - head == expected
    bn_channels = 64 + sum(n * c * 2 for n, c in zip(blocks, (64, 128, 256, 512))) + 128 + 256 + 512
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 2 * bn_channels  # moving mean + variance
    feats = feature_model(model, ["stage1", "stage2", "stage3", "stage4"])
    assert [tuple(o.shape) for o in feats.outputs] == [
        (None, 16, 16, 64), (None, 8, 8, 128), (None, 4, 4, 256), (None, 2, 2, 512), (None, 16)]
    assert model.get_layer("stage2_block1_proj_conv").strides == (2, 2)
    assert model.get_layer("stage2_block1_conv1").strides == (2, 2)


def test_mobilenet_alpha_quarter_is_much_smaller():
    small = build_embedder("mobilenet", 16, DEFAULT_SHAPE, alpha=0.25)
    full = build_embedder("mobilenet", 16, DEFAULT_SHAPE)
    assert small.count_params() * 10 < full.count_params()
    assert small.get_layer("conv_pw_13").filters == 256
    assert full.get_layer("conv_pw_13").filters == 1024
    feats = feature_model(small, ["stage1", "stage2", "stage3", "stage4"])
    assert [tuple(o.shape)[1:3] for o in feats.outputs[:-1]] == [(16, 16), (8, 8), (4, 4), (2, 2)]


# --------------------------------------------------------------------------------------------
# feature models


def test_feature_model_small_cnn_and_resnet50(rng):
    model = build_embedder("small_cnn", 16, (32, 32, 3))
    feats = feature_model(model, ["stage1", "stage3", "stage4_out", "stage2_conv1"])
    assert [tuple(o.shape) for o in feats.outputs] == [
        (None, 16, 16, 32), (None, 4, 4, 128), (None, 2, 2, 256), (None, 16, 16, 64), (None, 16)]
    x = _pixels(rng, 2, (32, 32, 3))
    *_, emb = feats(x)
    np.testing.assert_allclose(emb.numpy(), model(x).numpy(), atol=1e-6)

    r50 = build_embedder("resnet50", 16, DEFAULT_SHAPE)
    feats = feature_model(r50, ["stage1", "stage2", "stage3", "stage4"])
    assert [tuple(o.shape) for o in feats.outputs] == [
        (None, 16, 16, 256), (None, 8, 8, 512), (None, 4, 4, 1024), (None, 2, 2, 2048),
        (None, 16)]
    assert backbone_spec_of(r50).default_branch == "conv3_block4_out"
    with pytest.raises(ValueError, match=r"stage1 -> conv2_block3_out.*conv1_conv"):
        feature_model(r50, ["stage9"])


def test_backbone_spec_of_survives_custom_name():
    model = build_embedder("small_cnn", 8, (32, 32, 1), name="specialist_digits", width=0.25)
    assert backbone_spec_of(model).name == "small_cnn"
    assert len(feature_model(model, "stage2").outputs) == 2
    with pytest.raises(ValueError, match="Stage aliases: stage1 -> stage1_out"):
        feature_model(model, ["nope"])


# --------------------------------------------------------------------------------------------
# saving, loading, weights


def test_keras_file_roundtrip(tmp_path, rng):
    for name, kwargs in [("small_cnn", {"pooling": "gem"}), ("mobilenet", {"alpha": 0.25})]:
        shape = SHAPES.get(name, DEFAULT_SHAPE)
        model = build_embedder(name, 16, shape, **kwargs)
        x = _pixels(rng, 2, shape)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)  # safe_mode on
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
        assert len(feature_model(loaded, ["stage3"]).outputs) == 2
    again = load_embedder(str(tmp_path / "small_cnn.keras"))
    assert again.name == "embedder_small_cnn"
    assert isinstance(again.get_layer("global_pool"), keras.layers.Layer)


def test_frozen_batchnorm_runs_in_inference_mode_and_is_not_trained(tmp_path, rng):
    keras.utils.set_random_seed(0)
    model = build_embedder("small_cnn", 8, input_shape=(16, 16, 3), freeze_batchnorm=True,
                           width=0.25)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and not any(l.trainable for l in bns)
    before = [w.numpy().copy() for l in bns for w in l.weights]
    x = rng.uniform(0, 255, (6, 16, 16, 3)).astype(np.float32)
    # Inference mode even when the model is called in training mode (batch statistics unused).
    np.testing.assert_allclose(model(x, training=True).numpy(), model(x, training=False).numpy(),
                               atol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    conv = model.get_layer(next(l.name for l in model.layers
                                if isinstance(l, keras.layers.Conv2D))).kernel.numpy().copy()
    model.fit(x, rng.normal(size=(6, 8)).astype(np.float32), epochs=2, verbose=0, shuffle=False)
    after = [w.numpy() for l in bns for w in l.weights]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)       # scale, offset and moving statistics
    assert not np.allclose(conv, model.get_layer(
        next(l.name for l in model.layers if isinstance(l, keras.layers.Conv2D))).kernel.numpy())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_embedder(path)
    assert not any(l.trainable for l in loaded.layers
                   if isinstance(l, keras.layers.BatchNormalization))
    # Unfrozen: the same network's BatchNorm layers train.
    free = build_embedder("small_cnn", 8, input_shape=(16, 16, 3), width=0.25)
    assert all(l.trainable for l in free.layers if isinstance(l, keras.layers.BatchNormalization))


def test_saved_model_loading(tmp_path, rng):
    model = build_embedder("small_cnn", 8, (32, 32, 3), width=0.25)
    x = _pixels(rng, 3, (32, 32, 3))
    expected = model(x).numpy()

    plain = str(tmp_path / "plain")
    model.export(plain, verbose=False)  # serving_default takes float pixels
    loaded = load_embedder(plain)
    np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)

    # A tfembed-style export: serving_default takes encoded bytes, "pixels" takes float pixels.
    class Exported(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_bytes(self, images):
            decoded = tf.map_fn(lambda b: tf.cast(tf.io.decode_png(b, channels=3), tf.float32),
                                images, fn_output_signature=tf.float32)
            return {"embeddings": self.m(tf.image.resize(decoded, (32, 32)))}

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")])
        def serve_pixels(self, images):
            return {"embeddings": self.m(images), "other": tf.zeros([tf.shape(images)[0]])}

    module = Exported(model)
    path = str(tmp_path / "tfembed_style")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve_bytes,
                                                  "pixels": module.serve_pixels})
    loaded = load_embedder(path)
    assert loaded.output.shape == (None, 8)
    np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)

    with pytest.raises(ValueError, match="Cannot load"):
        load_embedder(str(tmp_path / "missing.keras"))
    assert load_embedder(model) is model


def test_imagenet_weights_rejected_where_no_source_exists():
    # ResNet-18/34 resolve "imagenet" through KerasHub (tests/models/test_hub.py); the demo CNN
    # has no pretrained source at all.
    with pytest.raises(ValueError, match="No ImageNet weights are bundled for backbone "
                                         "'small_cnn'"):
        build_embedder("small_cnn", input_shape=(32, 32, 3), weights="imagenet")
    with pytest.raises(ValueError, match="not found"):
        build_embedder("small_cnn", input_shape=(32, 32, 3), weights="/nonexistent.weights.h5")


def test_imagenet_weights_passed_to_keras_applications(monkeypatch):
    calls = {}
    real = keras.applications.ResNet50

    def fake(**kwargs):
        calls.update(kwargs)
        return real(**dict(kwargs, weights=None))  # no download here

    monkeypatch.setattr(keras.applications, "ResNet50", fake)
    model = build_embedder("resnet50", 8, (32, 32, 3), weights="imagenet")
    assert calls["weights"] == "imagenet" and calls["include_top"] is False
    assert calls["input_tensor"] is model.get_layer("preprocess").output
    assert model.get_layer("conv1_conv") is not None


def _randomise(model, rng):
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype("float32") * 0.1)


def test_local_weights_file_resnet18(tmp_path, rng):
    bb = backbone_model("resnet18", DEFAULT_SHAPE)
    _randomise(bb, rng)  # conv kernels and BN statistics all differ from a fresh build
    path = str(tmp_path / "resnet18.weights.h5")
    bb.save_weights(path)
    model = build_embedder("resnet18", 16, DEFAULT_SHAPE, weights=path)
    x = _pixels(rng, 2, DEFAULT_SHAPE)
    mean = np.array([0.485, 0.456, 0.406], "float32")
    std = np.array([0.229, 0.224, 0.225], "float32")
    expected = bb((x / 255.0 - mean) / std).numpy()
    got = feature_model(model, ["stage4"])(x)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_local_weights_file_resnet50_via_keras_applications(tmp_path, rng):
    shape = (32, 32, 3)
    bb = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    path = str(tmp_path / "resnet50_notop.weights.h5")
    bb.save_weights(path)
    model = build_embedder("resnet50", 16, shape, weights=path)
    x = _pixels(rng, 2, shape)
    expected = bb(keras.applications.resnet.preprocess_input(x.copy())).numpy()
    got = feature_model(model, ["stage4"])(x)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# --------------------------------------------------------------------------------------------
# preprocessing


def test_preprocess_modes_known_pixel():
    pixel = np.array([[[[255.0, 128.0, 0.0]]]], "float32")  # R, G, B
    expected = {
        "caffe": [0.0 - 103.939, 128.0 - 116.779, 255.0 - 123.68],  # B, G, R minus BGR mean
        "torch": [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225],
        "tf": [1.0, 128 / 127.5 - 1.0, -1.0],
        "unit": [1.0, 128 / 255, 0.0],
    }
    for mode, values in expected.items():
        out = Preprocess(mode)(pixel).numpy().reshape(-1)
        np.testing.assert_allclose(out, values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Preprocess("caffe")(pixel).numpy(),
                               keras.applications.resnet.preprocess_input(pixel.copy()), atol=1e-4)
    np.testing.assert_allclose(Preprocess("tf")(pixel).numpy(),
                               keras.applications.mobilenet.preprocess_input(pixel.copy()),
                               atol=1e-6)
    grey = np.full((1, 2, 2, 1), 51.0, "float32")
    np.testing.assert_allclose(Preprocess("unit")(grey).numpy(), 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="3"):
        Preprocess("caffe")(grey)
    with pytest.raises(ValueError, match="mode"):
        Preprocess("imagenet")
    config = Preprocess("torch", backbone="resnet18").get_config()
    assert Preprocess.from_config(config).mode == "torch"


def test_saved_trainers_and_ensembles_load_in_a_fresh_process(tmp_path):
    """load_embedder registers the classes of tfembed's trainers and ensembles (they live with
    their method, which Keras does not import by itself)."""
    from tfembed.ensemble import build_attention_ensemble

    abe = build_attention_ensemble("small_cnn", num_learners=2, embedding_dim=8,
                                   input_shape=(28, 28, 3), backbone_kwargs={"width": 0.25})
    path = str(tmp_path / "abe.keras")
    abe.save(path)
    script = ("import sys; from tfembed.models import load_embedder; "
              "print(type(load_embedder(sys.argv[1])).__name__)")
    done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "AttentionEnsemble"
