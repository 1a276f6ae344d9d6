"""Pretrained weights from KerasHub presets, and KerasHub image backbones as registry entries.

Two jobs:

* **ImageNet weights for the networks keras.applications lacks.** ResNet-18 and ResNet-34 stay
  tfembed's own inline implementation (``backbones.py``: every layer reachable by name for hint,
  attention transfer and the ABE branch point, saved models unchanged); ``weights="imagenet"``
  loads a KerasHub preset of the same architecture and copies its weights layer by layer
  (:func:`port_resnet`). The default sources are torchvision's ImageNet weights as timm
  publishes them (``hf://timm/resnet18.tv_in1k``, ``hf://timm/resnet34.tv_in1k``): the weights
  the PyTorch papers (001, 003) started from, and KerasHub's own ``resnet_18_imagenet`` has no
  ResNet-34 sibling. Any other KerasHub preset of a torchvision-layout ResNet works too
  (``weights="resnet_18_imagenet"``, another ``hf://`` handle, or a local preset directory).
* **Any KerasHub image backbone as a registry backbone**: ``backbone="hub:<preset>"`` (ViT,
  DINOv2, EfficientNet, ResNet, ... presets, a ``hf://``/``kaggle://`` handle or a local preset
  directory). The KerasHub model is nested in the embedder; its pyramid levels (where the
  architecture has them) are exposed as layers ``stage<i>_out`` so stage aliases work for hint /
  attention transfer; a token sequence (ViT-like) is reduced to its class token, and a pooled
  vector becomes a 1×1 map. Of a CLIP / SigLIP preset only the image tower is used (CLIP: the
  class token, what ``CLIPBackbone`` projects; SigLIP: the tower's attention-pooled output), at
  the preset's own image size. The preset's own pixel normalisation (its ``ImageConverter``
  scale and offset) becomes the embedder's ``Preprocess`` layer.

Offline use: a handle is redirected to ``$TFEMBED_PRESETS/<name>`` when that directory exists
(``<name>`` = the handle's last path component, e.g. ``resnet18.tv_in1k``), so a machine
without network (or a test) serves a local copy through exactly the code path a downloaded
preset takes: ``keras_hub.models.Backbone.from_preset(<directory>)``. Nothing downloads unless a
user asks for a preset that is not available locally.
"""

import functools
import inspect
import os

import keras
import numpy as np

from tfembed.models.layers import TORCH_OFFSET, TORCH_SCALE

#: ``weights="imagenet"`` of our own ResNets: the KerasHub preset it resolves to.
IMAGENET_PRESETS = {
    "resnet18": "hf://timm/resnet18.tv_in1k",
    "resnet34": "hf://timm/resnet34.tv_in1k",
}

PRESETS_ENV = "TFEMBED_PRESETS"
_SCHEMES = ("hf://", "kaggle://", "modelscope://", "gs://", "file://")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as e:  # pragma: no cover - keras-hub is a dependency
        raise ImportError("KerasHub presets need the keras-hub package "
                          "(pip install keras-hub)") from e
    return keras_hub


def local_name(handle):
    """The directory name a local stand-in of preset ``handle`` has under ``$TFEMBED_PRESETS``."""
    parts = [p for p in str(handle).split("://")[-1].strip("/").split("/") if p]
    # kaggle://owner/model/keras/<preset>/<version>: the version is not part of the name.
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return parts[-1] if parts else str(handle)


def resolve_preset(handle):
    """``handle`` itself, or the local directory standing in for it (see the module docstring)."""
    handle = os.fspath(handle)
    if os.path.isdir(handle):
        return handle
    root = os.environ.get(PRESETS_ENV, "")
    if root:
        local = os.path.join(root, local_name(handle))
        if os.path.isdir(local):
            return local
    return handle


def is_preset(weights):
    """Whether a ``weights`` string names a KerasHub preset (not a weights file)."""
    if not isinstance(weights, str) or not weights:
        return False
    if weights.startswith(_SCHEMES):
        return True
    if os.path.isdir(weights):
        return os.path.exists(os.path.join(weights, "config.json"))
    if os.sep in weights or "." in os.path.basename(weights):
        return False  # a file path (e.g. *.weights.h5)
    return weights in _builtin_presets()


@functools.lru_cache(maxsize=1)
def _builtin_presets():
    return frozenset(_keras_hub().models.Backbone.presets)


def _offline_hint(handle, what):
    return (f"Could not load the KerasHub preset {handle!r} ({what}). Downloading it needs "
            f"network access; offline, put a local copy of the preset in "
            f"${PRESETS_ENV}/{local_name(handle)} (a directory written by "
            f"keras_hub.models.Backbone.save_to_preset, or a timm/Hugging Face snapshot), or "
            f"pass the preset directory itself.")


def load_backbone(handle, load_weights=True, what="backbone", **kwargs):
    """``keras_hub.models.Backbone.from_preset`` on the resolved handle, with a clear error."""
    keras_hub = _keras_hub()
    resolved = resolve_preset(handle)
    try:
        return keras_hub.models.Backbone.from_preset(resolved, load_weights=load_weights,
                                                      **kwargs)
    except (OSError, ValueError, ConnectionError, RuntimeError) as e:
        if os.path.isdir(resolved):
            raise  # a local preset that fails is a real error, not a download problem
        raise ValueError(_offline_hint(handle, what) + f" Cause: {type(e).__name__}: {e}") from e


def preset_normalisation(handle):
    """``(scale, offset)`` per channel (3 floats each) of the preset's ``ImageConverter``.

    Pixels 0..255 become ``x * scale + offset``. ``None`` when the preset has no image
    converter (then the caller decides).
    """
    keras_hub = _keras_hub()
    resolved = resolve_preset(handle)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(resolved)
    except FileNotFoundError:
        return None   # the preset ships no image_converter.json
    except ValueError as e:
        if "find" in str(e) and "subclass" in str(e):
            return None   # no converter class for this backbone
        if not os.path.isdir(resolved):
            raise ValueError(_offline_hint(handle, "image converter") + f" Cause: {e}") from e
        return None
    except OSError as e:
        if not os.path.isdir(resolved):
            raise ValueError(_offline_hint(handle, "image converter") + f" Cause: {e}") from e
        return None
    if converter is None:
        return None
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    scale = np.broadcast_to(np.asarray(scale, np.float64), (3,))
    offset = np.broadcast_to(np.asarray(offset, np.float64), (3,))
    return [float(v) for v in scale], [float(v) for v in offset]


# --------------------------------------------------------------------------------------------
# ImageNet weights for tfembed's own ResNet-18 / ResNet-34

def _our_name(hub_name):
    """KerasHub ResNet v1 layer name → the name of the same layer in ``backbones._basic_resnet``."""
    if hub_name in ("conv1_conv", "conv1_bn"):
        return hub_name
    # stack{s}_block{b}_{0,1,2}_{conv,bn} with 0-based s, b; ours: stage{s+1}_block{b+1}_...
    head, _, rest = hub_name.partition("_block")
    stack = int(head[len("stack"):])
    block, part, kind = rest.split("_")
    suffix = {"0": f"proj_{kind}", "1": f"{kind}1", "2": f"{kind}2"}[part]
    return f"stage{stack + 1}_block{int(block) + 1}_{suffix}"


def port_resnet(hub_backbone, target, blocks):
    """Copies a KerasHub ResNet v1 basic-block backbone's weights into our ResNet layers.

    Args:
      hub_backbone: a ``keras_hub.models.ResNetBackbone``.
      target: a model containing our ResNet layers (``backbones._basic_resnet`` names).
      blocks: the block counts per stage our network has (``(2, 2, 2, 2)`` for ResNet-18).

    The architectures must agree exactly (torchvision layout: 7×7 stem, basic blocks, projection
    shortcuts where the shape changes, no pre-activation); anything else is refused with the
    differing field. Every weight-carrying layer of either side must find its counterpart.
    """
    wanted = dict(stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=list(blocks),
                  stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
                  use_pre_activation=False, input_conv_filters=[64], input_conv_kernel_sizes=[7])
    config = hub_backbone.get_config()
    wrong = {k: config.get(k) for k, v in wanted.items() if list_or(config.get(k)) != v}
    if wrong:
        raise ValueError(f"KerasHub preset backbone {hub_backbone.name!r} is not the "
                         f"torchvision-layout ResNet with blocks {list(blocks)} that tfembed "
                         f"builds: {wrong} (expected {({k: wanted[k] for k in wrong})})")
    ours = {layer.name: layer for layer in target.layers if layer.weights}
    copied = set()
    for layer in hub_backbone.layers:
        if not layer.weights:
            continue
        name = _our_name(layer.name)
        if name not in ours:
            raise ValueError(f"no layer {name!r} for KerasHub layer {layer.name!r}")
        ours[name].set_weights(layer.get_weights())
        copied.add(name)
    missing = sorted(set(ours) - copied)
    if missing:
        raise ValueError(f"ResNet layers without pretrained weights: {missing}")


def list_or(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def load_resnet_preset(name, handle, target, blocks):
    """Loads preset ``handle`` into our ResNet ``name`` (layers of ``target``).

    The preset's pixel normalisation must be what our ResNets' ``Preprocess("torch")`` does
    (ImageNet mean/std on 0..1 pixels); a preset trained with another normalisation would see
    wrongly scaled inputs, so it is refused.
    """
    norm = preset_normalisation(handle)
    if norm is not None:
        scale, offset = norm
        if not (np.allclose(scale, TORCH_SCALE, rtol=1e-3) and
                np.allclose(offset, TORCH_OFFSET, rtol=1e-3, atol=1e-4)):
            raise ValueError(
                f"Preset {handle!r} normalises pixels as x * {scale} + {offset}, but {name} "
                f"in tfembed uses the ImageNet mean/std normalisation (x * {list(TORCH_SCALE)} "
                f"+ {list(TORCH_OFFSET)}). Use backbone='hub:{handle}' to keep the preset's own "
                "normalisation.")
    hub_backbone = load_backbone(handle, load_weights=True, what=f"ImageNet weights of {name}")
    port_resnet(hub_backbone, target, blocks)


def patch_keras_hub_configs():
    """Makes ``.keras`` files of ``hub:`` ViT embedders loadable under KerasHub 0.32.

    ``ViTPatchingAndEmbedding.get_config`` there writes ``num_patches`` and ``num_positions``,
    which its ``__init__`` derives from the image and patch sizes and does not accept, so loading
    any saved model that nests a ViT fails ("Unrecognized keyword arguments"). The two derived
    keys are dropped on the way in. Idempotent; a KerasHub whose ``__init__`` takes them is left
    alone.
    """
    try:
        from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding
    except ImportError:   # no keras-hub, or a KerasHub that moved the layer: nothing to patch
        return
    cls = ViTPatchingAndEmbedding
    if getattr(cls, "_tfembed_config_patch", False):
        return
    if "num_patches" in inspect.signature(cls.__init__).parameters:
        return
    original = cls.from_config.__func__

    def from_config(klass, config):
        config = {k: v for k, v in config.items() if k not in ("num_patches", "num_positions")}
        return original(klass, config)

    cls.from_config = classmethod(from_config)
    cls._tfembed_config_patch = True


# --------------------------------------------------------------------------------------------
# "hub:<preset>" registry backbones

HUB_PREFIX = "hub:"


def preset_of(backbone_name):
    return backbone_name[len(HUB_PREFIX):]


@keras.saving.register_keras_serializable(package="tfembed")
class KeepStages(keras.layers.Layer):
    """``[features, stage outputs...]`` → ``features``; the stages stay in the model's graph."""

    def call(self, inputs):
        return inputs[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="tfembed")
class ClassToken(keras.layers.Layer):
    """A token sequence ``[B, N, D]`` → its first (class) token as a 1×1 map ``[B, 1, 1, D]``.

    ViT-like KerasHub backbones return every token; the class token is their image summary (the
    one ViT's and DINOv2's heads read), and as a 1×1 feature map it passes through the
    embedder's global pooling unchanged.
    """

    def call(self, tokens):
        return keras.ops.expand_dims(keras.ops.expand_dims(tokens[:, 0], 1), 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[-1])


def build_hub_backbone(x, handle, weights):
    """Builds KerasHub preset ``handle`` on the symbolic tensor ``x`` (preprocessed pixels).

    ``weights``: None → the preset's architecture, randomly initialised; ``"imagenet"`` (or any
    true value naming the preset's weights) → the preset's weights. Returns the feature map
    ``[B, h, w, C]`` (``[B, 1, 1, D]`` for token and pooled outputs).
    """
    hub_backbone = load_backbone(handle, load_weights=bool(weights), what=f"backbone {handle}",
                                 image_shape=tuple(x.shape[1:]))
    if hasattr(hub_backbone, "vision_encoder"):  # CLIP / SigLIP: the image tower only
        hub_backbone = hub_backbone.vision_encoder
        native = tuple(hub_backbone.inputs[0].shape[1:])
        if native != tuple(x.shape[1:]):
            # Their backbones take no image_shape: the tower keeps its preset's input size.
            raise ValueError(f"backbone hub:{handle}: the image tower takes {native[:2]} images; "
                             f"set model.image_size to {native[0]} (got {tuple(x.shape[1:3])})")
    pyramid = dict(getattr(hub_backbone, "pyramid_outputs", None) or {})
    levels = sorted(pyramid, key=lambda k: int(k[1:]))
    outputs = [pyramid[k] for k in levels] + [hub_backbone.output]
    name = "hub_" + "".join(c if c.isalnum() else "_" for c in local_name(handle))
    nested = keras.Model(hub_backbone.inputs, outputs, name=name)
    results = nested(x)
    results = results if isinstance(results, (list, tuple)) else [results]
    # Pyramid level P<k> is at stride 2^k: stage<k-1>, so stage1 is stride 4 as for the
    # registry's other backbones.
    stages = [keras.layers.Identity(name=f"stage{int(level[1:]) - 1}_out")(tensor)
              for level, tensor in zip(levels, results[:-1])]
    features = results[-1]
    if stages:
        # A functional model keeps only layers between its inputs and outputs: routing the
        # stage outputs through this no-op keeps them reachable by name (hint / attention).
        features = KeepStages(name="hub_features")([features, *stages])
    if len(features.shape) == 3:
        features = ClassToken(name="class_token")(features)
    elif len(features.shape) == 2:
        # Already the image summary (SigLIP's vision tower ends in attention pooling): as a 1×1
        # map it passes the embedder's global pooling unchanged, like a class token.
        features = keras.layers.Reshape((1, 1, features.shape[-1]),
                                        name="pooled_feature")(features)
    elif len(features.shape) != 4:
        raise ValueError(f"KerasHub backbone {handle!r} returns {features.shape}; expected a "
                         "feature map [B, H, W, C], a token sequence [B, N, D] or a pooled "
                         "feature [B, D]")
    return features
