"""SavedModel export: layout, versions, atomicity, and serving with TensorFlow alone."""

import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfembed import export as export_lib
from tfembed.data.transforms import decode_image, eval_transform
from tfembed.export import export_from_file, export_model, next_version, read_metadata

IMAGE_SIZE = (32, 32)
RESIZE_SIZE = (36, 36)


@keras.saving.register_keras_serializable(package="tfembed_test_export")
class ScalePixels(keras.layers.Layer):
    """A custom layer only this test module defines: the served model must not need it."""

    def __init__(self, scale=1.0 / 127.5, offset=-1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset

    def call(self, x):
        return x * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*IMAGE_SIZE, 3))
    x = ScalePixels()(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8)(x)
    outputs = keras.layers.UnitNormalization()(x)
    model = keras.Model(inputs, outputs, name="tiny_embedder")
    # Non-default BatchNorm statistics, so a model restored without its variables would differ.
    bn = model.layers[3]
    bn.moving_mean.assign(np.linspace(-0.2, 0.3, 6).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 6).astype("float32"))
    return model


def _encode(array, fmt):
    if fmt == "png":
        return tf.io.encode_png(array if array.ndim == 3 else array[..., None]).numpy()
    if fmt == "jpeg":
        return tf.io.encode_jpeg(array, quality=90).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt.upper())
    return buf.getvalue()


def _smooth_image(rng, h, w, channels):
    """A smooth random image (so resizing is meaningful) as uint8 [h, w, channels]."""
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for _ in range(channels):
        a, b, c = rng.uniform(0.05, 0.4, size=3)
        planes.append(127.5 + 127.5 * np.sin(a * yy + b * xx + c * 10))
    noise = rng.integers(-20, 21, size=(h, w, channels))
    return np.clip(np.stack(planes, -1) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Export twice, then serve version 2 in a fresh interpreter that cannot import keras/tfembed."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("export")
    model = _tiny_model()
    first = export_model(model, str(root), "universal", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)
    second = export_model(model, str(root), "universal", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)

    rgb = _smooth_image(rng, 40, 50, 3)
    grey = _smooth_image(rng, 33, 41, 1)[..., 0]
    rgba = _smooth_image(rng, 37, 29, 4)
    bmp = _smooth_image(rng, 30, 30, 3)
    gif_src = _smooth_image(rng, 20, 48, 3)
    jpeg_src = _smooth_image(rng, 61, 45, 3)
    images = {
        "rgb_png": _encode(rgb, "png"),
        "jpeg": _encode(jpeg_src, "jpeg"),
        "grey_png": _encode(grey, "png"),
        "rgba_png": _encode(rgba, "png"),
        "bmp": _encode(bmp, "bmp"),
        "gif": _encode(gif_src, "gif"),
    }
    names = list(images)
    # What each image decodes to, computed independently of the serving graph.
    decoded = {
        "rgb_png": rgb,
        "jpeg": tf.io.decode_jpeg(images["jpeg"], channels=3).numpy(),
        "grey_png": np.repeat(grey[..., None], 3, axis=-1),
        "rgba_png": rgba[..., :3],
        "bmp": bmp,
        "gif": np.asarray(Image.open(io.BytesIO(images["gif"])).convert("RGB")),
    }
    pixels = np.stack([eval_transform(decoded[n], IMAGE_SIZE, RESIZE_SIZE).numpy() for n in names])
    keras_embeddings = model.predict(pixels, verbose=0)

    work = root / "io"
    work.mkdir()
    for i, n in enumerate(names):
        (work / f"{i}.img").write_bytes(images[n])
    np.save(work / "pixels.npy", pixels)

    code = textwrap.dedent(
        f"""
        import json, os, sys

        # The served model must load with neither keras nor tfembed importable. (TensorFlow
        # imports Keras eagerly when it can; a None entry makes every such import fail.)
        _BLOCKED = ("keras", "tf_keras", "tfembed", "test_export")
        for _name in _BLOCKED:
            sys.modules[_name] = None
        import numpy as np
        import tensorflow as tf
        work = {str(work)!r}
        loaded = tf.saved_model.load({second!r})
        files = [os.path.join(work, f"{{i}}.img") for i in range({len(names)})]
        images = tf.constant([open(f, "rb").read() for f in files])
        by_bytes = loaded.signatures["serving_default"](images=images)
        pixels = tf.constant(np.load(os.path.join(work, "pixels.npy")))
        by_pixels = loaded.signatures["serving_pixels"](pixels=pixels)
        spec = loaded.signatures["serving_default"].structured_input_signature
        pix_spec = loaded.signatures["serving_pixels"].structured_input_signature
        np.save(os.path.join(work, "by_bytes.npy"), by_bytes["embeddings"].numpy())
        np.save(os.path.join(work, "by_pixels.npy"), by_pixels["embeddings"].numpy())
        info = {{
            "signatures": sorted(loaded.signatures.keys()),
            "outputs": sorted(by_bytes.keys()),
            "by_bytes_dtype": by_bytes["embeddings"].dtype.name,
            "images_spec": [spec[0] == (), sorted(spec[1]), spec[1]["images"].dtype.name,
                            spec[1]["images"].shape.as_list()],
            "pixels_spec": [sorted(pix_spec[1]), pix_spec[1]["pixels"].shape.as_list()],
            "num_variables": len(loaded.variables),
            "modules": sorted(m for m, mod in sys.modules.items()
                              if m.split(".")[0] in _BLOCKED and mod is not None),
            "custom_layer_seen": any(hasattr(m, "ScalePixels") for m in list(sys.modules.values())),
        }}
        with open(os.path.join(work, "info.json"), "w") as f:
            json.dump(info, f)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=str(work), env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        "root": root,
        "model": model,
        "first": first,
        "second": second,
        "names": names,
        "keras": keras_embeddings,
        "by_bytes": np.load(work / "by_bytes.npy"),
        "by_pixels": np.load(work / "by_pixels.npy"),
        "info": json.loads((work / "info.json").read_text()),
    }


def test_layout_and_versions(served):
    root = served["root"]
    assert served["first"] == str(root / "universal" / "1")
    assert served["second"] == str(root / "universal" / "2")
    for v in ("1", "2"):
        assert (root / "universal" / v / "saved_model.pb").is_file()
        assert (root / "universal" / v / "variables" / "variables.index").is_file()
    assert sorted(os.listdir(root / "universal")) == ["1", "2"]  # no temp dirs left behind
    assert next_version(str(root / "universal")) == 3


def test_metadata(served):
    meta = read_metadata(served["second"])
    assert meta["embedding_dim"] == 8
    assert meta["image_size"] == list(IMAGE_SIZE)
    assert meta["resize_size"] == list(RESIZE_SIZE)
    assert meta["name"] == "universal"
    assert meta["model_name"] == "tiny_embedder"
    assert meta["version"] == 2
    import tfembed

    assert meta["tfembed_version"] == tfembed.__version__


def test_loads_without_keras_or_tfembed(served):
    info = served["info"]
    assert info["modules"] == []
    assert not info["custom_layer_seen"]
    # Variables are saved as variables (conv kernel+bias, 4 BN, dense kernel+bias), not constants.
    assert info["num_variables"] == len(served["model"].weights) == 8


def test_signatures(served):
    info = served["info"]
    assert {"serving_default", "serving_pixels"} <= set(info["signatures"])
    assert info["outputs"] == ["embeddings"]
    assert info["by_bytes_dtype"] == "float32"
    assert info["images_spec"] == [True, ["images"], "string", [None]]
    assert info["pixels_spec"] == [["pixels"], [None, *IMAGE_SIZE, 3]]


def test_served_embeddings_match(served):
    n = len(served["names"])
    by_bytes, by_pixels, expected = served["by_bytes"], served["by_pixels"], served["keras"]
    assert by_bytes.shape == by_pixels.shape == (n, 8)
    np.testing.assert_allclose(np.linalg.norm(by_bytes, axis=1), 1.0, atol=1e-5)
    # bytes in (decode + transform in the graph) == pixels in (transform computed here) == Keras.
    # Grey and RGBA rows are compared against their RGB conversion, so they prove the channel
    # handling; JPEG/GIF rows against the same decoder's output.
    np.testing.assert_allclose(by_bytes, by_pixels, atol=1e-5)
    np.testing.assert_allclose(by_pixels, expected, atol=1e-5)
    # Different images give different embeddings (the comparison above is not vacuous).
    assert np.min(np.linalg.norm(by_bytes[:, None] - by_bytes[None], axis=-1) + np.eye(n)) > 1e-3


def test_in_process_load_and_empty_batch(served):
    loaded = tf.saved_model.load(served["first"])
    out = loaded.signatures["serving_default"](images=tf.constant([], dtype=tf.string))
    assert out["embeddings"].shape == (0, 8)
    out = loaded.signatures["serving_pixels"](pixels=tf.zeros([0, *IMAGE_SIZE, 3]))
    assert out["embeddings"].shape == (0, 8)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]


def _small_model():
    inputs = keras.Input((*IMAGE_SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(ScalePixels()(inputs))
    return keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(4)(x)))


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize("where", ["after_saved_model", "partial_write", "metadata", "rename"])
def test_atomic_on_failure(tmp_path, monkeypatch, where):
    model = _small_model()
    model_dir = tmp_path / "m"
    assert export_model(model, str(tmp_path), "m", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE).endswith(
        os.sep + "1"
    )
    (model_dir / ".tmp-9-stale").mkdir()  # a crashed export's leftovers: ignored for numbering
    (model_dir / "notes").mkdir()
    before = set(os.listdir(model_dir))

    real_write = export_lib._write_saved_model
    if where == "after_saved_model":
        def failing(archive, path):
            real_write(archive, path)
            assert os.path.isfile(os.path.join(path, "saved_model.pb"))
            raise RuntimeError("boom")
        monkeypatch.setattr(export_lib, "_write_saved_model", failing)
    elif where == "partial_write":
        def failing(archive, path):
            os.makedirs(os.path.join(path, "variables"))
            with open(os.path.join(path, "saved_model.pb"), "wb") as f:
                f.write(b"half")
            raise RuntimeError("boom")
        monkeypatch.setattr(export_lib, "_write_saved_model", failing)
    elif where == "metadata":
        monkeypatch.setattr(export_lib, "_write_metadata", _boom)
    else:
        monkeypatch.setattr(export_lib.os, "rename", _boom)

    with pytest.raises(RuntimeError, match="boom"):
        export_model(model, str(tmp_path), "m", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)
    assert set(os.listdir(model_dir)) == before
    monkeypatch.undo()

    path = export_model(model, str(tmp_path), "m", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)
    assert path == str(model_dir / "2")
    assert set(os.listdir(model_dir)) == before | {"2"}
    assert (model_dir / "2" / "saved_model.pb").is_file()


def test_explicit_version_and_argument_checks(tmp_path):
    model = _small_model()
    kw = dict(image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)
    assert export_model(model, str(tmp_path), "m", version=5, **kw) == str(tmp_path / "m" / "5")
    with pytest.raises(FileExistsError):
        export_model(model, str(tmp_path), "m", version=5, **kw)
    assert export_model(model, str(tmp_path), "m", **kw) == str(tmp_path / "m" / "6")
    with pytest.raises(ValueError, match="input shape"):
        export_model(model, str(tmp_path), "m", image_size=224)  # 224x224 vs a 32x32 model
    with pytest.raises(ValueError, match="name"):
        export_model(model, str(tmp_path), "../escape", **kw)
    with pytest.raises(ValueError, match="resize_size"):
        export_model(model, str(tmp_path), "m", image_size=IMAGE_SIZE, resize_size=(30, 30))
    assert sorted(os.listdir(tmp_path / "m")) == ["5", "6"]


def test_export_from_file(tmp_path, monkeypatch):
    # Do not depend on tfembed.models here: the custom layer is registered by this module.
    monkeypatch.setattr(export_lib, "_register_tfembed_objects", lambda: None)
    model = _small_model()
    path = tmp_path / "model.keras"
    model.save(path)
    out = export_from_file(str(path), str(tmp_path / "saved_models"), "universal")
    assert out == str(tmp_path / "saved_models" / "universal" / "1")
    meta = read_metadata(out)
    assert meta["image_size"] == [32, 32] and meta["resize_size"] == [37, 37]
    assert meta["embedding_dim"] == 4
    loaded = tf.saved_model.load(out)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.signatures["serving_pixels"](pixels=tf.constant(x))["embeddings"].numpy(),
        model.predict(x, verbose=0),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="directory"):
        export_from_file(str(tmp_path / "saved_models"), str(tmp_path), "x")


# -- preprocess ops ---------------------------------------------------------------------------


def test_eval_transform_shapes_and_dtypes(rng):
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    a = eval_transform(image, (24, 24), (28, 28))
    b = eval_transform(image.astype(np.float32), (24, 24), (28, 28))
    assert a.dtype == tf.float32 and a.shape == (24, 24, 3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 255.0
    batch = eval_transform(np.stack([image, image[::-1]]), (24, 24), (28, 28))
    assert batch.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(batch[0].numpy(), a.numpy(), atol=1e-4)
    assert eval_transform(image, 16, None).shape == (16, 16, 3)
    constant = eval_transform(np.full((9, 13, 3), 77, np.uint8), (4, 4), (6, 6))
    np.testing.assert_allclose(constant.numpy(), 77.0, atol=1e-3)
    with pytest.raises(ValueError, match="resize_size"):
        eval_transform(image, (24, 24), (20, 28))


def test_eval_transform_centre_crop():
    # At resize_size == input size the resize is the identity, so the output is the exact centre.
    image = np.arange(8 * 10 * 3, dtype=np.float32).reshape(8, 10, 3) % 251
    out = eval_transform(image, (4, 6), (8, 10)).numpy()
    np.testing.assert_allclose(out, image[2:6, 2:8], atol=1e-3)


def test_decode_image_channels(rng):
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    out = decode_image(tf.io.encode_png(rgba))
    assert out.dtype == tf.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out.numpy(), rgba[..., :3])
    np.testing.assert_array_equal(
        decode_image(tf.io.encode_png(grey[..., None])).numpy(), np.stack([grey] * 3, -1)
    )
    np.testing.assert_array_equal(decode_image(_encode(rgba[..., :3], "bmp")).numpy(), rgba[..., :3])
    assert decode_image(_encode(rgba[..., :3], "gif")).shape == (5, 7, 3)


def test_a_loaded_saved_model_evaluates_with_its_recorded_resize(tmp_path):
    # The pixel signature takes the crop; the resize before it is what serving_default does in
    # its graph, so evaluation of the loaded SavedModel must use the same (not the 256/224 ratio).
    from tfembed.data.types import ImageSpec
    from tfembed.models import load_embedder

    path = export_model(_small_model(), str(tmp_path), "m", image_size=IMAGE_SIZE,
                        resize_size=(48, 48))
    assert ImageSpec.of(load_embedder(path)).sizes() == (IMAGE_SIZE, (48, 48))
