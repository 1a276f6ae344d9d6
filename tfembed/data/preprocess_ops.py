"""Per-image graph ops shared by the training pipeline and the exported serving signature.

Both functions are pure TensorFlow (no Keras, no Python-side randomness) so they trace into a
``tf.data`` map, a ``tf.function`` or a SavedModel signature alike. Keeping one implementation
means the pixels a served model sees are the pixels it was evaluated on.

* :func:`decode_image` — encoded JPEG / PNG / GIF / BMP bytes → ``uint8 [H, W, 3]``.
  Grey images are replicated to three channels; an alpha channel is dropped (not composited);
  an animated GIF gives its first frame.
* :func:`eval_transform` — the evaluation transform: resize to ``resize_size`` (bilinear,
  anti-aliased, aspect ratio not preserved) then centre-crop ``image_size``; returns ``float32``
  pixels in ``0..255`` (models normalise internally).
"""

from typing import Optional

import tensorflow as tf

__all__ = ["decode_image", "eval_transform", "as_size", "crop_to_box", "low_resolution",
           "DEFAULT_IMAGE_SIZE", "DEFAULT_RESIZE_SIZE"]

# The size helpers are TensorFlow-free, next to ImageSpec; re-exported for the pipelines.
from tfembed.data.types import DEFAULT_IMAGE_SIZE, DEFAULT_RESIZE_SIZE, Size, as_size  # noqa: E402,F401


def decode_image(contents) -> tf.Tensor:
    """Decode one encoded image (scalar ``tf.string``) to ``uint8 [H, W, 3]``.

    Accepts every format ``tf.io.decode_image`` knows (JPEG, PNG, GIF, BMP), of any size and with
    1 (grey), 2 (grey + alpha), 3 or 4 (RGBA) channels: grey is replicated to RGB, alpha is
    dropped. 16-bit PNGs are scaled to 8 bits. Undecodable bytes raise
    ``tf.errors.InvalidArgumentError`` when the op runs.
    """
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def eval_transform(
    image,
    image_size: Size = DEFAULT_IMAGE_SIZE,
    resize_size: Optional[Size] = DEFAULT_RESIZE_SIZE,
) -> tf.Tensor:
    """Resize to ``resize_size`` then centre-crop ``image_size``; ``float32`` in ``0..255``.

    Args:
      image: ``[H, W, 3]`` (or a batch ``[B, H, W, 3]`` of same-sized images), ``uint8`` or any
        integer type holding 0..255, or float already in ``0..255``.
      image_size: ``(height, width)`` of the output (an int means square).
      resize_size: ``(height, width)`` the image is first resized to (bilinear, anti-aliased,
        aspect ratio not preserved); must be at least ``image_size`` in both dimensions. ``None``
        resizes straight to ``image_size`` (no crop).

    Returns:
      ``float32 [image_size[0], image_size[1], 3]`` (or ``[B, ...]``) clipped to ``[0, 255]``.
    """
    height, width = as_size(image_size, "image_size")
    if resize_size is None:
        resize_h, resize_w = height, width
    else:
        resize_h, resize_w = as_size(resize_size, "resize_size")
    if resize_h < height or resize_w < width:
        raise ValueError(
            f"resize_size {(resize_h, resize_w)} must be at least image_size {(height, width)} "
            "in both dimensions (the crop is taken from the resized image)"
        )
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.float32:
        image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, (resize_h, resize_w), method="bilinear", antialias=True)
    top = (resize_h - height) // 2
    left = (resize_w - width) // 2
    image = image[..., top : top + height, left : left + width, :]
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, image.shape[:-3].concatenate([height, width, 3]))


def crop_to_box(image, box) -> tf.Tensor:
    """Crops ``image [H, W, C]`` to ``box = (x, y, w, h)`` in pixels (CUB / CARS196 boxes).

    The box is clipped to the image (at least one pixel); a box with a NaN (no box listed for
    that image) keeps the whole image.
    """
    image = tf.convert_to_tensor(image)
    box = tf.cast(box, tf.float32)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    valid = tf.reduce_all(tf.math.is_finite(box))
    box = tf.where(valid, box, tf.stack([0.0, 0.0, width, height]))
    x0 = tf.clip_by_value(tf.floor(box[0]), 0.0, width - 1.0)
    y0 = tf.clip_by_value(tf.floor(box[1]), 0.0, height - 1.0)
    x1 = tf.clip_by_value(tf.math.ceil(box[0] + box[2]), x0 + 1.0, width)
    y1 = tf.clip_by_value(tf.math.ceil(box[1] + box[3]), y0 + 1.0, height)
    x0, y0, x1, y1 = (tf.cast(v, tf.int32) for v in (x0, y0, x1, y1))
    return image[y0:y1, x0:x1]


def low_resolution(image, size: Size) -> tf.Tensor:
    """Down-samples to ``size`` (anti-aliased) and back up to the input size (bilinear).

    The low-quality view of cross-quality distillation (001 §5.4: 224 → 50×50 → 224). Works on
    ``[H, W, C]`` or ``[B, H, W, C]`` float pixels with a static spatial size.
    """
    image = tf.convert_to_tensor(image)
    out_size = image.shape[-3:-1]
    if None in out_size:
        raise ValueError(f"low_resolution needs a static spatial size, got {image.shape}")
    small = tf.image.resize(image, as_size(size, "low_resolution"), antialias=True)
    return tf.clip_by_value(tf.image.resize(small, tuple(out_size), method="bilinear"), 0.0, 255.0)
