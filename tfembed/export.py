"""Export an embedding model as a TF Serving ready SavedModel.

Layout (TF Serving's): ``<export_root>/<name>/<version>/`` with ``saved_model.pb``, ``variables/``
and ``assets.extra/tfembed.json``. ``tensorflow_model_server --model_base_path=<abs
export_root>/<name>`` serves the highest version.

Signatures:

* ``serving_default``: ``images`` — 1-D ``tf.string``, encoded JPEG / PNG / GIF / BMP bytes of any
  size, grey, RGB or RGBA. Each image is decoded to RGB (:func:`tfembed.data.transforms.
  decode_image`) and put through the evaluation transform (:func:`~tfembed.data.transforms.
  eval_transform`: resize to ``resize_size``, centre crop ``image_size``) inside the graph, so a
  REST client sends ``{"b64": ...}`` and nothing else. Returns ``embeddings``: ``float32 [batch, dim]``.
* ``serving_pixels``: ``pixels`` — ``float32 [batch, image_size[0], image_size[1], 3]`` in ``0..255``,
  already at ``image_size`` (no resize or crop is applied; the model normalises internally).
  Returns ``embeddings`` likewise.

The SavedModel is self-contained: ``tf.saved_model.load`` restores it in a process that imports
neither Keras nor tfembed, and custom layers need not be importable there.

Writes are atomic: the SavedModel is written to ``<export_root>/<name>/.tmp-<version>-<random>``
and renamed to ``<version>`` only once complete; on failure the temporary directory is removed.
TF Serving ignores non-numeric directory names, so a crash never exposes a half-written version.
"""

import datetime
import importlib
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence, Union

import tensorflow as tf

from tfembed.data.transforms import (
    DEFAULT_IMAGE_SIZE,
    as_size,
    decode_image,
    eval_transform,
)
from tfembed.data.types import ImageSpec

__all__ = [
    "export_model",
    "export_from_file",
    "next_version",
    "list_versions",
    "read_metadata",
    "METADATA_FILENAME",
    "IMAGES_SIGNATURE",
    "PIXELS_SIGNATURE",
]

METADATA_FILENAME = os.path.join("assets.extra", "tfembed.json")
IMAGES_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
_TMP_PREFIX = ".tmp-"
_MAX_RENAME_ATTEMPTS = 100

Size = Union[int, Sequence[int]]


# --------------------------------------------------------------------------------------------
# Versions


def list_versions(model_dir: str):
    """Sorted integer versions present in ``model_dir`` (numeric subdirectories only)."""
    if not os.path.isdir(model_dir):
        return []
    versions = []
    for entry in os.listdir(model_dir):
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry)):
            versions.append(int(entry))
    return sorted(versions)


def next_version(model_dir: str) -> int:
    """1 + the largest integer subdirectory of ``model_dir``; 1 if there is none.

    Temporary ``.tmp-*`` directories (in-progress or crashed exports) and any other non-numeric
    entries are ignored, as TF Serving ignores them.
    """
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def read_metadata(version_dir: str) -> dict:
    """The ``assets.extra/tfembed.json`` metadata of an exported version."""
    with open(os.path.join(version_dir, METADATA_FILENAME)) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------
# Export


def _model_input_hw(model):
    """Static (height, width) of a single-input image model, or None where unknown."""
    shape = None
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs and len(inputs) == 1:
        shape = tuple(inputs[0].shape)
    if shape is None or len(shape) != 4:
        return None
    return shape[1], shape[2]


def _resolve_sizes(model, image_size, resize_size):
    """Apply the ``None`` defaults (the model's ImageSpec) and check ``image_size`` against the
    model's input shape."""
    try:
        spec = ImageSpec.of(model)   # also ensembles and trainers, which state their spec
    except ValueError:
        spec = None
    model_hw = spec.size if spec is not None else _model_input_hw(model)
    if image_size is None:
        if model_hw is not None and None not in model_hw:
            image_size = model_hw
        else:
            image_size = DEFAULT_IMAGE_SIZE
    image_size = as_size(image_size, "image_size")
    if model_hw is not None:
        for got, want in zip(image_size, model_hw):
            if want is not None and got != want:
                raise ValueError(
                    f"image_size {image_size} does not match the model's input shape "
                    f"{tuple(model_hw)} (height, width); pass image_size={tuple(model_hw)}"
                )
    if resize_size is None:
        # The resize the model records, else the 256 -> 224 ratio of the standard transform.
        resize_size = (spec.resize if spec is not None and spec.size == image_size
                       else ImageSpec(image_size).resize)
    resize_size = as_size(resize_size, "resize_size")
    if resize_size[0] < image_size[0] or resize_size[1] < image_size[1]:
        raise ValueError(f"resize_size {resize_size} must be at least image_size {image_size}")
    return image_size, resize_size


def _check_name(name: str):
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or name.startswith(".")
        or "/" in name
        or (os.sep in name)
        or (os.altsep and os.altsep in name)
    ):
        raise ValueError(
            "export name must be a plain directory name (no path separators, not hidden), "
            f"got {name!r}"
        )


def _build_archive(model, image_size, resize_size):
    """An ExportArchive tracking ``model`` with the two serving endpoints; returns (archive, dim)."""
    import keras  # only the exporting process needs Keras

    height, width = image_size

    def embed(pixels):
        # TF's CPU Conv2D mishandles an empty batch (it returns its input), so an empty request
        # runs the model on one zero image and returns none of the rows.
        batch = tf.shape(pixels)[0]
        padded = tf.pad(pixels, [[0, 1 - tf.minimum(batch, 1)], [0, 0], [0, 0], [0, 0]])
        embeddings = model(padded, training=False)
        if not tf.is_tensor(embeddings):
            raise TypeError(
                "export_model needs a model returning a single [batch, dim] tensor, got "
                f"{type(embeddings).__name__}"
            )
        if embeddings.shape.rank != 2:
            raise ValueError(f"the model must return [batch, dim] embeddings, got shape {embeddings.shape}")
        return tf.cast(embeddings[:batch], tf.float32)

    def serve_images(images):
        def one(contents):
            return eval_transform(decode_image(contents), image_size, resize_size)

        pixels = tf.map_fn(
            one,
            images,
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
        )
        return {"embeddings": embed(pixels)}

    def serve_pixels(pixels):
        return {"embeddings": embed(pixels)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        IMAGES_SIGNATURE,
        serve_images,
        input_signature=[tf.TensorSpec([None], tf.string, name="images")],
    )
    pixels_fn = archive.add_endpoint(
        PIXELS_SIGNATURE,
        serve_pixels,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")],
    )
    concrete = pixels_fn.get_concrete_function()
    dim = concrete.structured_outputs["embeddings"].shape[-1]
    if dim is None:  # dynamic output width: ask the model once
        dim = int(pixels_fn(tf.zeros([1, height, width, 3], tf.float32))["embeddings"].shape[-1])
    return archive, int(dim)


def _write_saved_model(archive, path):
    """Write the SavedModel (separate so tests can make it fail)."""
    archive.write_out(path, verbose=False)


def _write_metadata(version_dir, metadata):
    extra = os.path.join(version_dir, os.path.dirname(METADATA_FILENAME))
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(version_dir, METADATA_FILENAME), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
        f.write("\n")


def export_model(
    model,
    export_root: str = "saved_models",
    name: str = "embedder",
    *,
    image_size: Optional[Size] = None,
    resize_size: Optional[Size] = None,
    version: Optional[int] = None,
) -> str:
    """Export ``model`` to ``<export_root>/<name>/<version>/`` and return that path.

    Args:
      model: a Keras 3 model mapping ``float32 [B, H, W, 3]`` RGB pixels in ``0..255`` to
        ``[B, D]`` embeddings (normalisation happens inside the model).
      export_root: directory holding one subdirectory per served model name.
      name: the model name (TF Serving ``--model_name``); a plain directory name.
      image_size: ``(height, width)`` the model sees; must agree with the model's static input
        shape. ``None``: the model's input shape, else 224×224.
      resize_size: the evaluation transform resizes to this before centre-cropping
        ``image_size``. ``None``: the model's ``ImageSpec`` (the resize ``build_embedder``
        recorded), else ``image_size`` × 256/224.
      version: integer version; default one more than the largest existing version (1 if none).
        An explicit version that already exists is a FileExistsError.

    Returns:
      The absolute path of the new version directory.
    """
    _check_name(name)
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be a non-negative int, got {version!r}")
    image_size, resize_size = _resolve_sizes(model, image_size, resize_size)
    archive, dim = _build_archive(model, image_size, resize_size)

    model_dir = os.path.abspath(os.path.join(export_root, name))
    os.makedirs(model_dir, exist_ok=True)

    import keras  # noqa: F401  (version string for the metadata)
    import tfembed

    metadata = {
        "format": "tfembed.saved_model/1",
        "name": name,
        "model_name": getattr(model, "name", None),
        "embedding_dim": dim,
        "image_size": list(image_size),
        "resize_size": list(resize_size),
        "input_range": [0.0, 255.0],
        "signatures": {
            IMAGES_SIGNATURE: {
                "inputs": {"images": "string [batch]: encoded JPEG/PNG/GIF/BMP bytes, any size"},
                "outputs": {"embeddings": f"float32 [batch, {dim}]"},
            },
            PIXELS_SIGNATURE: {
                "inputs": {"pixels": f"float32 [batch, {image_size[0]}, {image_size[1]}, 3] in 0..255"},
                "outputs": {"embeddings": f"float32 [batch, {dim}]"},
            },
        },
        "tfembed_version": tfembed.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }

    wanted = version if version is not None else next_version(model_dir)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise FileExistsError(f"version {version} already exists in {model_dir}")

    tmp_dir = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{wanted}-", dir=model_dir)
    try:
        _write_saved_model(archive, tmp_dir)
        for _ in range(_MAX_RENAME_ATTEMPTS):
            metadata["version"] = wanted
            _write_metadata(tmp_dir, metadata)
            final_dir = os.path.join(model_dir, str(wanted))
            if not os.path.exists(final_dir):
                try:
                    os.rename(tmp_dir, final_dir)
                    return final_dir
                except OSError:
                    # Lost a race with a concurrent export (target appeared and is non-empty).
                    if not os.path.exists(final_dir):
                        raise
            if version is not None:
                raise FileExistsError(f"version {version} already exists in {model_dir}")
            wanted = max(wanted + 1, next_version(model_dir))
        raise RuntimeError(f"could not claim a version directory in {model_dir}")
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _register_tfembed_objects():
    """Import tfembed's modules that register serializable layers/losses (best effort)."""
    from tfembed.models.embedder import SERIALIZABLE_PACKAGES  # noqa: PLC0415

    for module in ("tfembed.models",) + SERIALIZABLE_PACKAGES:
        try:
            importlib.import_module(module)
        except Exception as err:  # a missing optional piece must not block exporting other models
            from absl import logging

            logging.warning("could not import %s to register its Keras objects: %s", module, err)
    from tfembed.models.hub import patch_keras_hub_configs  # noqa: PLC0415

    patch_keras_hub_configs()   # a nested KerasHub ViT's config does not load as written


def export_from_file(
    model_path: str,
    export_root: str = "saved_models",
    name: str = "embedder",
    image_size: Optional[Size] = None,
    resize_size: Optional[Size] = None,
    version: Optional[int] = None,
    custom_objects: Optional[dict] = None,
) -> str:
    """Load a ``.keras`` file and :func:`export_model` it; returns the version directory.

    ``image_size=None`` takes the model's input height and width (224×224 if they are dynamic);
    ``resize_size=None`` the model's ``ImageSpec`` (else ``image_size`` × 256/224). tfembed's own layers are registered before
    loading; pass ``custom_objects`` for anything else.
    """
    import keras

    if os.path.isdir(model_path):
        raise ValueError(
            f"{model_path} is a directory; export_from_file expects a .keras file "
            "(a SavedModel is already exported)"
        )
    if not os.path.exists(model_path):
        raise FileNotFoundError(model_path)
    _register_tfembed_objects()
    model = keras.models.load_model(model_path, custom_objects=custom_objects, compile=False)
    return export_model(
        model,
        export_root,
        name,
        image_size=image_size,
        resize_size=resize_size,
        version=version,
    )
