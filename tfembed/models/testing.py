"""Local stand-ins of the pretrained sources, for tests and offline dry runs.

Nothing here downloads. Each writer produces what a real source would deliver, in the same
format, with random values: a KerasHub preset directory (Keras format), a timm snapshot
(``config.json`` + ``model.safetensors`` in PyTorch's layout, which KerasHub converts on load),
or a keras.applications-style weights file of a backbone alone. Loading them goes through the
code path a real download takes; only the numbers are not ImageNet's.
"""

import json
import os

import keras
import numpy as np

from tfembed.models.layers import _TORCH_MEAN_RGB, _TORCH_STD_RGB

#: ResNet block counts per stage, by architecture.
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def _randomise_batchnorm(model, rng):
    # Fresh BatchNorm layers hold mean 0 / variance 1, which would hide a swapped mean and
    # variance (or gamma and beta) in a port; random statistics expose it.
    draws = {"gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.1, n),
             "moving_mean": lambda n: rng.normal(0, 0.1, n),
             "moving_variance": lambda n: rng.uniform(0.5, 1.5, n)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for attr, draw in draws.items():
                variable = getattr(layer, attr, None)  # no gamma with scale=False (Inception)
                if variable is not None:
                    variable.assign(draw(variable.shape).astype(np.float32))


def write_keras_resnet_preset(directory, architecture="resnet18", seed=0, mean=None, std=None):
    """A KerasHub-format preset of a torchvision-layout ResNet (random weights); its path.

    ``mean``/``std`` (0..1 pixels) set the preset's image converter; default ImageNet's.
    """
    import keras_hub

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=list(RESNET_BLOCKS[architecture]),
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block", use_pre_activation=False)
    _randomise_batchnorm(backbone, rng)
    directory = os.fspath(directory)
    backbone.save_to_preset(directory)
    mean = _TORCH_MEAN_RGB if mean is None else mean
    std = _TORCH_STD_RGB if std is None else std
    keras_hub.layers.ImageConverter(
        image_size=(224, 224), scale=[1.0 / 255.0 / s for s in std],
        offset=[-m / s for m, s in zip(mean, std)]).save_to_preset(directory)
    return directory


#: ViT-B/16 at 224 px, the architecture of KerasHub's ``vit_base_patch16_224_imagenet``.
VIT_B16 = dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12,
               hidden_dim=768, mlp_dim=3072)


def write_vit_preset(directory, seed=0, **architecture):
    """A KerasHub-format ViT preset (random weights; default ViT-B/16 at 224 px, ``VIT_B16``)
    with the [-1, 1] pixel scaling of KerasHub's ImageNet ViT presets; its path."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    config = dict(VIT_B16, **architecture)
    keras_hub.models.ViTBackbone(**config).save_to_preset(os.fspath(directory))
    keras_hub.layers.ImageConverter(image_size=tuple(config["image_shape"][:2]),
                                    scale=1.0 / 127.5, offset=-1.0).save_to_preset(
                                        os.fspath(directory))
    return os.fspath(directory)


def write_timm_resnet_snapshot(directory, architecture="resnet34", seed=0):
    """A timm (Hugging Face) snapshot of a ResNet: ``config.json`` + ``model.safetensors``.

    Tensors are named and laid out as PyTorch's torchvision ResNet (conv kernels
    ``[out, in, kh, kw]``); returns ``(path, tensors)``.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}

    def conv(name, cin, cout, k):
        tensors[f"{name}.weight"] = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5,
                                               (cout, cin, k, k)).astype(np.float32)

    def bn(name, c):
        tensors[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        tensors[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        tensors[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        tensors[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        tensors[f"{name}.num_batches_tracked"] = np.zeros((), np.int64)

    conv("conv1", 3, 64, 7)
    bn("bn1", 64)
    cin = 64
    for stage, (blocks, width) in enumerate(zip(RESNET_BLOCKS[architecture],
                                                (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            conv(f"{prefix}.conv1", cin, width, 3)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            bn(f"{prefix}.bn2", width)
            if b == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", cin, width, 1)
                bn(f"{prefix}.downsample.1", width)
            cin = width
    tensors["fc.weight"] = rng.normal(0, 0.01, (1000, 512)).astype(np.float32)
    tensors["fc.bias"] = np.zeros(1000, np.float32)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    config = {"architecture": architecture, "num_classes": 1000, "num_features": 512,
              "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bilinear",
                                 "mean": list(_TORCH_MEAN_RGB), "std": list(_TORCH_STD_RGB),
                                 "num_classes": 1000}}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory, tensors


def write_backbone_weights(path, backbone, input_shape=(224, 224, 3), seed=0, **kwargs):
    """A weights file of registered ``backbone`` alone (random values), as ``weights=`` takes.

    For the keras.applications backbones this stands in for the ``*_notop.h5`` download.
    """
    from tfembed.models.backbones import backbone_model

    keras.utils.set_random_seed(seed)
    model = backbone_model(backbone, input_shape, weights=None, **kwargs)
    _randomise_batchnorm(model, np.random.default_rng(seed))
    model.save_weights(os.fspath(path))
    return os.fspath(path)
