"""Embedders: pixels → backbone → global pool → Dense → L2 normalisation (DESIGN §4).

An embedder is a plain functional ``keras.Model`` (not a subclass), so it saves and loads as a
``.keras`` file (``safe_mode`` on) and exports as a SavedModel. Its layers, from input to output:

    ``images`` (Input, float pixels 0..255, RGB, NHWC)
    → ``preprocess`` (:class:`Preprocess`, mode from the backbone's spec)
    → the backbone's layers (inline, reachable by name — see :func:`feature_model`)
    → ``global_pool`` (avg | max | gem)
    → ``embedding_dense`` (Dense, float32)
    → ``l2_norm`` (UnitNormalization, float32)

The two output layers are float32 even under a ``mixed_float16`` policy, so distances and losses
are computed in full precision.
"""

import os

import keras
import tensorflow as tf

from tfembed.data.types import ImageSpec

from tfembed.models.backbones import BACKBONES, backbone_spec, build_backbone, hub_spec
from tfembed.models.hub import HUB_PREFIX, local_name
from tfembed.models.layers import GeneralizedMeanPooling2D, Preprocess

_POOLINGS = ("avg", "max", "gem")


def _pooling_layer(pooling):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="global_pool")
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="global_pool")
    if pooling == "gem":
        return GeneralizedMeanPooling2D(name="global_pool")
    raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")


def build_embedder(backbone, embedding_dim=128, input_shape=(224, 224, 3), weights=None,
                   pooling="avg", name=None, resize_size=None, freeze_batchnorm=False,
                   **kwargs):
    """An L2-normalised embedding model on a registered backbone.

    Args:
      backbone: registry name (``tfembed.models.BACKBONES``), e.g. ``"resnet50"``,
        ``"resnet18"``, ``"mobilenet"``, ``"small_cnn"``, or ``"hub:<KerasHub preset>"``.
      embedding_dim: size of the embedding.
      input_shape: ``(H, W, C)`` of the float pixels (0..255, RGB) the model takes.
      weights: backbone weights: ``None``, ``"imagenet"``, a KerasHub preset (ResNet-18/34) or a
        local weights file of the backbone alone (see ``tfembed.models.backbone_model`` and
        the ``backbones`` module docstring).
      pooling: ``"avg"``, ``"max"`` or ``"gem"`` global pooling.
      name: model name; default ``"embedder_<backbone>"``.
      resize_size: the evaluation resize before the centre crop of ``input_shape[:2]`` (an int
        or ``(height, width)``; default the 256/224 ratio), recorded in the model's config: its
        ``tfembed.data.ImageSpec``, which pipelines, evaluation and export read by default.
      freeze_batchnorm: every BatchNormalization layer of the backbone frozen: its scale and
        offset not trained and its statistics not updated, running in inference mode (Keras runs
        a non-trainable BatchNormalization that way). Common practice when fine-tuning a
        pretrained network for metric learning on small class-balanced batches (e.g. 003 on
        CUB and Cars): batch statistics of 32 images of one domain replace the pretrained ones.
      **kwargs: passed to the backbone (``alpha`` for mobilenet, ``width`` for small_cnn, …).

    Returns:
      a functional ``keras.Model`` mapping ``[B, H, W, C]`` pixels to ``[B, embedding_dim]``
      float32 unit-norm rows.
    """
    spec = backbone_spec(backbone)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    image_spec = ImageSpec(tuple(input_shape[:2]), resize_size, channels=input_shape[-1])
    x = Preprocess(spec.preprocess, backbone=backbone, name="preprocess",
                   resize_size=image_spec.resize, **spec.preprocess_kwargs)(inputs)
    features, _ = build_backbone(backbone, x, weights=weights, **kwargs)
    pooled = _pooling_layer(pooling)(features)
    dense = keras.layers.Dense(embedding_dim, dtype="float32", name="embedding_dense")(pooled)
    outputs = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_norm")(dense)
    model = keras.Model(inputs, outputs, name=name or f"embedder_{safe_name(backbone)}")
    if freeze_batchnorm:
        freeze_batchnorm_layers(model)
    return model


def freeze_batchnorm_layers(model):
    """Sets every BatchNormalization layer of ``model`` (nested models included) non-trainable,
    which in Keras 3 also runs it in inference mode (its moving statistics)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif isinstance(layer, keras.Model):
            freeze_batchnorm_layers(layer)


def safe_name(backbone):
    """A registry name usable in a model name (``hub:<path or handle>`` holds ``/`` and ``:``)."""
    if backbone.startswith(HUB_PREFIX):
        backbone = "hub_" + local_name(backbone[len(HUB_PREFIX):])
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in backbone)


def backbone_spec_of(embedder):
    """The :class:`BackboneSpec` of the backbone ``embedder`` was built on.

    Looked up, in order, from the ``backbone`` recorded in its ``Preprocess`` layer, from a model
    name ``embedder_<backbone>``, and from the first registered spec whose stage layers all exist
    in the model (``resnet18``, ``resnet34`` and ``small_cnn`` share stage layer names, so aliases
    resolve the same either way). Raises ``ValueError`` when none applies.
    """
    for layer in getattr(embedder, "layers", []):
        if isinstance(layer, Preprocess) and layer.backbone in BACKBONES:
            return BACKBONES[layer.backbone].spec
        if isinstance(layer, Preprocess) and str(layer.backbone).startswith(HUB_PREFIX):
            # A loaded hub embedder: its stage layers are in the model; the preset is not
            # needed (nor downloaded) to resolve aliases.
            return hub_spec(layer.backbone)
    name = getattr(embedder, "name", "") or ""
    if name.startswith("embedder_") and name[len("embedder_"):] in BACKBONES:
        return BACKBONES[name[len("embedder_"):]].spec
    names = {layer.name for layer in getattr(embedder, "layers", [])}
    for entry in BACKBONES.values():
        wanted = set(entry.spec.stages.values()) | {entry.spec.default_branch}
        if wanted <= names:
            return entry.spec
    raise ValueError(f"Cannot tell which registered backbone model {name!r} was built on "
                     f"(registered: {', '.join(sorted(BACKBONES))})")


def feature_model(embedder, layers, backbone=None):
    """A model returning ``[feature maps..., embedding]`` for the requested layers.

    Args:
      embedder: a functional embedder (``build_embedder`` or a loaded ``.keras`` file).
      layers: a list (or one string) of stage aliases (``"stage3"``) or concrete layer names.
      backbone: registry name used to resolve aliases; default: ``backbone_spec_of(embedder)``.

    The returned model shares the embedder's layers and weights (training it trains them).
    Unknown names raise ``ValueError`` listing the stage aliases and layer names available.
    """
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    try:
        spec = backbone_spec(backbone) if backbone else backbone_spec_of(embedder)
    except ValueError:
        if backbone:
            raise
        spec = None
    available = [layer.name for layer in embedder.layers]
    outputs = []
    for requested in layers:
        layer_name = spec.layer_name(requested) if spec is not None else requested
        if layer_name not in available:
            stages = (", ".join(f"{k} -> {v}" for k, v in spec.stages.items())
                      if spec is not None else "none (backbone unknown)")
            raise ValueError(
                f"No layer {requested!r} in model {embedder.name!r}. Stage aliases: {stages}. "
                f"Layers: {', '.join(available)}")
        outputs.append(embedder.get_layer(layer_name).output)
    outputs.extend(embedder.outputs)
    inputs = embedder.inputs[0] if len(embedder.inputs) == 1 else embedder.inputs
    return keras.Model(inputs, outputs, name=f"{embedder.name}_features")


def _recorded_spec(path, size):
    """The ImageSpec ``tfembed.export`` recorded next to a SavedModel (``assets.extra/
    tfembed.json``: the resize its serving signature applies), or None."""
    import json  # noqa: PLC0415

    meta = os.path.join(path, "assets.extra", "tfembed.json")
    if not tf.io.gfile.exists(meta):
        return None
    with tf.io.gfile.GFile(meta) as f:
        resize = json.load(f).get("resize_size")
    return None if not resize or None in size else ImageSpec(size, tuple(resize))


def _is_saved_model_dir(path):
    return tf.io.gfile.isdir(path) and (
        tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))
        or tf.io.gfile.exists(os.path.join(path, "saved_model.pbtxt")))


def _pixel_signature(path):
    """``(endpoint, input_name, input_spec, output_key)`` of the SavedModel's float-pixel signature.

    Preference: a signature named ``pixels``, then ``serving_pixels`` (``tfembed.export``), then
    ``serving_default``, then any other: the first
    whose only input is a float ``[B, H, W, C]`` tensor. The output is ``embeddings`` if the
    signature returns it, else its only output.
    """
    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    order = [k for k in ("pixels", "serving_pixels", "serving_default") if k in signatures]
    order += sorted(k for k in signatures if k not in order)
    for key in order:
        fn = signatures[key]
        _, kw_specs = fn.structured_input_signature
        if len(kw_specs) != 1:
            continue
        (input_name, spec), = kw_specs.items()
        if not (spec.dtype.is_floating and spec.shape.rank == 4):
            continue
        outputs = fn.structured_outputs
        if isinstance(outputs, dict):
            if "embeddings" in outputs:
                output_key = "embeddings"
            elif len(outputs) == 1:
                output_key = next(iter(outputs))
            else:
                continue
        else:
            output_key = None
        return key, input_name, spec, output_key
    described = {k: str(signatures[k].structured_input_signature[1]) for k in order}
    raise ValueError(f"SavedModel {path!r} has no signature taking float pixels [B, H, W, C] "
                     f"(signatures: {described})")


#: Packages whose import registers tfembed's serializable classes: the trainers and ensembles a
#: ``.keras`` file may hold live with their method, which Keras does not import by itself.
SERIALIZABLE_PACKAGES = ("tfembed.losses", "tfembed.distill", "tfembed.universal",
                         "tfembed.ensemble", "tfembed.cohort")


def register_serializables(optimizers=True):
    """Imports the packages that register tfembed's Keras classes (and its optimizers)."""
    import importlib  # noqa: PLC0415

    for package in SERIALIZABLE_PACKAGES + (("tfembed.optimizers",) if optimizers else ()):
        importlib.import_module(package)


def load_embedder(path, compile=False):
    """Loads an embedder from a ``.keras`` file or a SavedModel directory.

    * ``.keras`` (or legacy ``.h5``) file: ``keras.models.load_model`` (``safe_mode`` on) with
      tfembed's custom objects registered; the result is the functional embedder itself, so
      :func:`feature_model` works on it.
    * SavedModel directory: a functional model ``Input(pixels) → keras.layers.TFSMLayer →
      embeddings`` (with the ImageSpec its tfembed export recorded, read by ``ImageSpec.of``). The endpoint is the signature named ``pixels`` if present, else
      ``serving_pixels`` (what ``tfembed.export`` writes next to its bytes-taking
      ``serving_default``), else ``serving_default``, else any other signature: the first that
      takes a single float
      ``[B, H, W, C]`` tensor (0..255 pixels, as tfembed exports; the SavedModel does its own
      preprocessing). Its ``embeddings`` output (or only output) is the model output. The
      SavedModel's variables are inside the TFSMLayer; it has no named intermediate layers.
    * a ``keras.Model`` is returned unchanged (so a teacher list may mix models and paths).

    ``compile=True`` also restores the training configuration of a ``.keras`` file (tfembed's
    losses are registered first).
    """
    if isinstance(path, keras.Model):
        return path
    path = os.fspath(path)
    if _is_saved_model_dir(path):
        endpoint, input_name, spec, output_key = _pixel_signature(path)
        inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name=input_name)
        layer = keras.layers.TFSMLayer(path, call_endpoint=endpoint, name="saved_model")
        outputs = layer(inputs)
        if isinstance(outputs, dict):
            outputs = outputs[output_key]
        parts = os.path.normpath(path).split(os.sep)
        base = "_".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]  # <name>/<version>/
        model = keras.Model(inputs, outputs, name=f"saved_model_{base}")
        recorded = _recorded_spec(path, tuple(spec.shape[1:3]))
        if recorded is not None:
            # ImageSpec.of(model) reads it: evaluation resizes as the serving signature does.
            model.recorded_image_spec = recorded
        return model
    if path.endswith((".keras", ".h5")) and tf.io.gfile.exists(path):
        try:  # registers KerasHub's layer classes, which a "hub:" embedder nests
            import keras_hub  # noqa: F401
        except ImportError:  # pragma: no cover - keras-hub is a dependency
            pass
        else:
            from tfembed.models.hub import patch_keras_hub_configs  # noqa: PLC0415

            patch_keras_hub_configs()
        register_serializables(compile)
        return keras.models.load_model(path, compile=compile)
    raise ValueError(f"Cannot load an embedder from {path!r}: expected an existing .keras file or "
                     "a SavedModel directory (containing saved_model.pb)")
