"""Small serializable layers used by the embedders.

Everything here is written with ``keras.ops`` and registered under the ``tfembed`` package, so a
model that uses it saves to ``.keras`` and loads back with ``keras.models.load_model`` in the
default ``safe_mode`` (no ``Lambda`` layers, no pickled Python code).

L2 normalisation is ``keras.layers.UnitNormalization``; it is not re-implemented here.
"""

import keras
from keras import ops

# ImageNet statistics, RGB order, as used by keras.applications' ``imagenet_utils``.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
# The "torch" normalisation as x * scale + offset on 0..255 pixels (how KerasHub presets state it).
TORCH_SCALE = tuple(1.0 / 255.0 / s for s in _TORCH_STD_RGB)
TORCH_OFFSET = tuple(-m / s for m, s in zip(_TORCH_MEAN_RGB, _TORCH_STD_RGB))

PREPROCESS_MODES = ("caffe", "torch", "tf", "unit", "affine")


@keras.saving.register_keras_serializable(package="tfembed")
class Preprocess(keras.layers.Layer):
    """Maps float pixels in ``0..255`` (RGB, NHWC) to what a backbone expects.

    Modes:
      * ``"caffe"``: RGB → BGR, then subtract the ImageNet mean per channel (no scaling); what
        ``keras.applications.resnet`` (ResNet50/101) expects.
      * ``"torch"``: ``/255``, then ``(x - mean) / std`` with the ImageNet RGB statistics.
      * ``"tf"``: ``x / 127.5 - 1`` (range ``[-1, 1]``); what MobileNet expects.
      * ``"unit"``: ``x / 255`` (range ``[0, 1]``); any number of channels.
      * ``"affine"``: ``x * scale + offset`` with per-channel (or scalar) ``scale`` and
        ``offset``; how a KerasHub preset's ``ImageConverter`` states its normalisation.

    ``"caffe"`` and ``"torch"`` need 3 channels. ``backbone`` is informational: the registry name of
    the backbone this preprocessing feeds, kept in the layer config so that the backbone of a
    saved embedder can be recovered (see ``tfembed.models.backbone_spec_of``). ``resize_size`` is
    informational too: the evaluation resize of the model's ``ImageSpec``
    (``tfembed.data.ImageSpec.of(model)``), carried in the config so that pipelines, evaluation
    and export of a saved model use the sizes it was trained with.
    """

    def __init__(self, mode="unit", backbone=None, scale=None, offset=None, resize_size=None,
                 **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"Preprocess mode must be one of {PREPROCESS_MODES}, got {mode!r}")
        if (mode == "affine") != (scale is not None and offset is not None):
            raise ValueError("Preprocess mode 'affine' takes scale and offset (and only it does)")
        self.mode = mode
        self.backbone = backbone
        self.scale = None if scale is None else [float(v) for v in _as_list(scale)]
        self.offset = None if offset is None else [float(v) for v in _as_list(offset)]
        self.resize_size = None if resize_size is None else [int(v) for v in resize_size]

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.mode in ("caffe", "torch") and channels is not None and channels != 3:
            raise ValueError(f"Preprocess mode {self.mode!r} needs 3 (RGB) channels, "
                             f"got input shape {tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "affine":
            scale = ops.convert_to_tensor(self.scale, dtype=x.dtype)
            offset = ops.convert_to_tensor(self.offset, dtype=x.dtype)
            return x * scale + offset
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN_RGB, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD_RGB, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        # caffe: channel order reversed (RGB -> BGR), then BGR mean subtracted.
        x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        return x - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "backbone": self.backbone})
        if self.mode == "affine":
            config.update({"scale": self.scale, "offset": self.offset})
        if self.resize_size is not None:
            config["resize_size"] = self.resize_size
        return config


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


@keras.saving.register_keras_serializable(package="tfembed")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """GeM pooling: ``(mean over H, W of max(x, eps)^p)^(1/p)`` per channel, NHWC → ``[B, C]``.

    ``p = 1`` is average pooling and ``p → ∞`` tends to max pooling. ``p`` is a fixed
    hyper-parameter here (not learned).
    """

    def __init__(self, p=3.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.maximum(inputs, self.epsilon)
        x = ops.mean(ops.power(x, self.p), axis=(1, 2))
        return ops.power(x, 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "epsilon": self.epsilon})
        return config
