"""Per-image graph ops: decoding, the evaluation transform and the training transform.

Everything here is pure TensorFlow (no Keras, no Python-side randomness), so it traces into a
``tf.data`` map, a ``tf.function`` or a SavedModel signature alike: the exported serving
signature uses the same :func:`decode_image` and :func:`eval_transform` as evaluation, so the
pixels a served model sees are the pixels it was evaluated on.

* :func:`decode_image` — encoded JPEG / PNG / GIF / BMP bytes → ``uint8 [H, W, 3]``. Grey images
  are replicated to three channels; an alpha channel is dropped (not composited); an animated GIF
  gives its first frame.
* :func:`eval_transform` — resize to ``resize_size`` (bilinear, anti-aliased, aspect ratio not
  preserved) then centre-crop ``image_size``; ``float32`` pixels in ``0..255`` (models normalise
  internally). :func:`crop_to_box` (bounding boxes) and :func:`low_resolution` (001's degraded
  view) are applied around it.
* :func:`train_transform` — a random crop and a random horizontal flip from a stateless
  ``seed [2]``. Crop modes: ``"resize_crop"`` (000/001's, the default: resize to
  ``resize_size`` (256×256) → a random ``image_size`` (224×224) crop), ``"random_resized"``
  (torchvision's RandomResizedCrop: a box of random area fraction and aspect ratio of the source
  image, resized to ``image_size``) and ``"multi_resolution"`` (HORDE's, used by 003: the image
  resized, aspect kept, so that its longer side is a random multiple of ``image_size``, then a
  random ``image_size`` crop, zero-padded where the image is smaller). The flip obeys each
  split's policy (``Split.hflip``, from ``Domain.hflip``): text domains are never mirrored.
  :class:`Augment` is a stream's choice of crop mode and flip (the sizes come from the model's
  :class:`~tfembed.data.ImageSpec`).
"""

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

# The size helpers are TensorFlow-free, next to ImageSpec; re-exported for the pipelines.
from tfembed.data.types import DEFAULT_IMAGE_SIZE, DEFAULT_RESIZE_SIZE, Size, as_size  # noqa: F401


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


CROP_MODES = ("resize_crop", "random_resized", "multi_resolution")
#: ``"random_resized"`` defaults: torchvision ``RandomResizedCrop``'s (scale = area fraction of the
#: source image, ratio = width / height of the box), the common practice.
RANDOM_RESIZED_SCALE = (0.08, 1.0)
RANDOM_RESIZED_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: Boxes tried before the central fallback (torchvision: 10).
RANDOM_RESIZED_ATTEMPTS = 10
#: ``"multi_resolution"`` default: HORDE's range of the resized longer side, in multiples of the
#: crop side (pierre-jacob/ICCV2019-Horde, config.json ``multi_res_min_ratio`` 0.8,
#: ``multi_res_max_ratio`` 1.8, aspect ratio always kept: ``prob_keep_ratio`` 1).
MULTI_RESOLUTION_RANGE = (0.8, 1.8)


def _range(value, default, what, upper=None):
    if value is None:
        return tuple(float(v) for v in default)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (min, max) pair, got {value!r}") from None
    if not 0.0 < lo <= hi or (upper is not None and hi > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{what} must satisfy 0 < min <= max{bound}, got {value!r}")
    return lo, hi


def check_crop(crop="resize_crop", crop_scale=None, crop_ratio=None, crop_resize_range=None):
    """``(mode, scale, ratio, resize_range)`` of the training crop, validated; None → defaults.

    ``crop_scale`` and ``crop_ratio`` belong to ``"random_resized"``, ``crop_resize_range`` to
    ``"multi_resolution"``; each is returned (with its default) whatever the mode.
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    return (crop, _range(crop_scale, RANDOM_RESIZED_SCALE, "crop_scale", upper=1.0),
            _range(crop_ratio, RANDOM_RESIZED_RATIO, "crop_ratio"),
            _range(crop_resize_range, MULTI_RESOLUTION_RANGE, "crop_resize_range"))


def _crop_kwargs(*args):
    """The validated crop keywords of :func:`train_transform` (see :func:`check_crop`)."""
    return dict(zip(("crop", "crop_scale", "crop_ratio", "crop_resize_range"),
                    check_crop(*args)))


def random_resized_box(height, width, seed, scale=RANDOM_RESIZED_SCALE,
                       ratio=RANDOM_RESIZED_RATIO, attempts=RANDOM_RESIZED_ATTEMPTS):
    """``(top, left, box_height, box_width)`` (int32) of a RandomResizedCrop box, stateless.

    torchvision's sampler: up to ``attempts`` candidates, each with an area of ``uniform(scale)``
    × the image's and a width/height ratio of ``exp(uniform(log(ratio)))``, sides rounded; the
    first that fits in the image is taken, at a uniform position. When none fits: the largest
    central box whose ratio is clamped to ``ratio`` (the whole image if its own ratio is in
    range). Every candidate is drawn at once from ``seed`` (``int64 [2]``): the box is a pure
    function of the seed and the image size.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    draws = tf.random.stateless_uniform([4, attempts], seed, dtype=tf.float64)
    target = h * w * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * draws[1])
    box_w = tf.round(tf.sqrt(target * aspect))
    box_h = tf.round(tf.sqrt(target / aspect))
    fits = (box_w > 0) & (box_w <= w) & (box_h > 0) & (box_h <= h)
    top = tf.floor(draws[2] * (h - box_h + 1.0))
    left = tf.floor(draws[3] * (w - box_w + 1.0))
    # The central fallback (torchvision's, plus at least one pixel per side).
    in_ratio = w / h
    fb_w = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    fb_w, fb_h = tf.maximum(fb_w, 1.0), tf.maximum(fb_h, 1.0)
    fallback = tf.stack([tf.floor((h - fb_h) / 2), tf.floor((w - fb_w) / 2), fb_h, fb_w])
    first = tf.argmax(tf.cast(fits, tf.int32))   # the first candidate that fits (0 if none)
    candidate = tf.gather(tf.stack([top, left, box_h, box_w]), first, axis=1)
    box = tf.cast(tf.where(tf.reduce_any(fits), candidate, fallback), tf.int32)
    return box[0], box[1], box[2], box[3]


def random_resized_crop(image, seed, image_size=(224, 224), scale=RANDOM_RESIZED_SCALE,
                        ratio=RANDOM_RESIZED_RATIO):
    """A :func:`random_resized_box` crop of ``image [H, W, 3]``, resized (bilinear,
    anti-aliased) to ``image_size``; float32 in 0..255."""
    image_size = as_size(image_size)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top, left, box_h, box_w = random_resized_box(shape[0], shape[1], seed, scale, ratio)
    patch = tf.slice(image, tf.stack([top, left, 0]), tf.stack([box_h, box_w, -1]))
    patch = tf.image.resize(tf.cast(patch, tf.float32), image_size, antialias=True)
    return tf.ensure_shape(tf.clip_by_value(patch, 0.0, 255.0), [*image_size, 3])


def multi_resolution_size(height, width, seed, image_size=(224, 224),
                          resize_range=MULTI_RESOLUTION_RANGE):
    """``(new_height, new_width)`` (int32) of HORDE's multi-resolution resize, stateless.

    The longer side becomes ``uniform(int(c·min), int(c·max))`` with ``c`` the crop side along
    it (``image_size``), the other side keeps the aspect ratio, both rounded up (HORDE's
    ``MultiResolution`` with ``prob_keep_aspect_ratio`` 1).
    """
    crop_h, crop_w = as_size(image_size)
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    u = tf.random.stateless_uniform([], seed, dtype=tf.float64)
    lo_h, hi_h = int(crop_h * resize_range[0]), int(crop_h * resize_range[1])
    lo_w, hi_w = int(crop_w * resize_range[0]), int(crop_w * resize_range[1])
    long_h = lo_h + u * (hi_h - lo_h)
    long_w = lo_w + u * (hi_w - lo_w)
    taller = h > w
    new_h = tf.where(taller, long_h, h / w * long_w)
    new_w = tf.where(taller, long_h * w / h, long_w)
    size = tf.maximum(tf.math.ceil(tf.stack([new_h, new_w])), 1.0)
    return tf.cast(size[0], tf.int32), tf.cast(size[1], tf.int32)


def multi_resolution_crop(image, seed, image_size=(224, 224),
                          resize_range=MULTI_RESOLUTION_RANGE):
    """HORDE's training crop ("random crop from randomly resized images", 003 §4.2).

    :func:`multi_resolution_size` resize (bilinear, anti-aliased), then a uniformly placed
    ``image_size`` crop; along a side shorter than the crop the image is centred on black
    (HORDE's ``RandomCrop`` pastes it on a black canvas). float32 in 0..255.
    """
    crop_h, crop_w = as_size(image_size)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    new_h, new_w = multi_resolution_size(shape[0], shape[1], seeds[0], (crop_h, crop_w),
                                         resize_range)
    image = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                            antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    pad_h, pad_w = tf.maximum(new_h, crop_h), tf.maximum(new_w, crop_w)
    image = tf.image.pad_to_bounding_box(image, (pad_h - new_h) // 2, (pad_w - new_w) // 2,
                                         pad_h, pad_w)
    u = tf.random.stateless_uniform([2], seeds[1], dtype=tf.float64)
    top = tf.cast(tf.floor(u[0] * tf.cast(pad_h - crop_h + 1, tf.float64)), tf.int32)
    left = tf.cast(tf.floor(u[1] * tf.cast(pad_w - crop_w + 1, tf.float64)), tf.int32)
    image = tf.slice(image, tf.stack([top, left, 0]), [crop_h, crop_w, 3])
    return tf.ensure_shape(image, [crop_h, crop_w, 3])


def _random_flip(image, seed, flip):
    """``flip``: a Python bool (decided when the graph is built) or a scalar bool tensor (per
    element, e.g. picked by the element's domain); the draw uses ``seed`` either way."""
    if isinstance(flip, (bool, np.bool_, int)):
        return tf.image.stateless_random_flip_left_right(image, seed) if flip else image
    return tf.cond(tf.cast(flip, tf.bool),
                   lambda: tf.image.stateless_random_flip_left_right(image, seed),
                   lambda: tf.identity(image))


def train_transform(image, seed, image_size=(224, 224), resize_size=(256, 256), flip=True,
                    crop="resize_crop", crop_scale=None, crop_ratio=None, crop_resize_range=None):
    """Random crop → random flip, driven by a stateless ``seed`` ``[2]``.

    Crop modes (``crop``):

    * ``"resize_crop"`` (default; 000/001's): resize to ``resize_size`` → uniformly placed
      ``image_size`` crop.
    * ``"random_resized"``: torchvision ``RandomResizedCrop`` on the source image
      (:func:`random_resized_box`): area fraction ``uniform(crop_scale)``, width/height ratio
      log-uniform in ``crop_ratio``, the central fallback after 10 misses; resized to
      ``image_size``. ``resize_size`` is not used.
    * ``"multi_resolution"``: HORDE's (:func:`multi_resolution_crop`): the longer side resized to
      a uniform multiple in ``crop_resize_range`` of ``image_size`` (aspect kept) → uniformly
      placed ``image_size`` crop, zero-padded where the image is smaller. ``resize_size`` is not
      used.

    Args:
      image: ``uint8``/float ``[H, W, 3]`` pixels in 0..255.
      seed: ``int64 [2]`` stateless seed (one per element, derived from the recipe seed).
      image_size: crop size ``(h, w)``.
      resize_size: size ``(h, w)`` the image is resized to before cropping (``resize_crop``).
      flip: random horizontal flip: a bool, or a scalar bool tensor (decided per element).
      crop, crop_scale, crop_ratio, crop_resize_range: the crop mode and its ranges (None: the
        defaults ``RANDOM_RESIZED_SCALE``, ``RANDOM_RESIZED_RATIO``, ``MULTI_RESOLUTION_RANGE``).

    Returns:
      float32 ``[h, w, 3]`` in 0..255.
    """
    crop, crop_scale, crop_ratio, crop_resize_range = check_crop(crop, crop_scale, crop_ratio,
                                                                 crop_resize_range)
    image_size, resize_size = as_size(image_size), as_size(resize_size)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if crop == "random_resized":
        image = random_resized_crop(image, seeds[0], image_size, crop_scale, crop_ratio)
    elif crop == "multi_resolution":
        image = multi_resolution_crop(image, seeds[0], image_size, crop_resize_range)
    else:
        # The same resize as eval_transform (bilinear, anti-aliased), so train and test pixels
        # match.
        image = tf.image.resize(tf.cast(image, tf.float32), resize_size, antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        image = tf.image.stateless_random_crop(image, [*image_size, 3], seeds[0])
    return _random_flip(image, seeds[1], flip)


def split_flips(splits, flip=True):
    """Per split, whether the training transform may flip it: ``flip`` (a bool, or one bool per
    split) and the split's own policy ``Split.hflip`` (False for text domains)."""
    splits = list(splits)
    if isinstance(flip, (bool, np.bool_, int)):
        flags = [bool(flip)] * len(splits)
    else:
        flags = [bool(f) for f in flip]
        if len(flags) != len(splits):
            raise ValueError(f"flip lists {len(flags)} values for {len(splits)} splits (give a "
                             "bool or one bool per split)")
    return [f and bool(getattr(s, "hflip", True)) for f, s in zip(flags, splits)]


Range = Optional[Tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class Augment:
    """A stream's training transform, without its sizes (those are the model's ImageSpec).

    Attributes:
      flip: random horizontal flip: a bool, or one bool per split of the stream (e.g.
        ``train.flip and domain.hflip`` per domain); a split whose ``hflip`` is False (a text
        domain) is never flipped either way.
      crop, crop_scale, crop_ratio, crop_resize_range: the crop mode of :func:`train_transform`
        and its ranges (None: the defaults).

    ``augment(image, seed, spec, flip)`` is :func:`train_transform` with these settings.
    """

    flip: Union[bool, Sequence[bool]] = True
    crop: str = "resize_crop"
    crop_scale: Range = None
    crop_ratio: Range = None
    crop_resize_range: Range = None

    def __post_init__(self):
        # Validated when built, so a typo fails before any pipeline is traced.
        check_crop(self.crop, self.crop_scale, self.crop_ratio, self.crop_resize_range)
        if not isinstance(self.flip, (bool, np.bool_, int)):
            object.__setattr__(self, "flip", tuple(bool(f) for f in self.flip))

    @property
    def crop_kwargs(self) -> dict:
        """The validated crop keywords of :func:`train_transform` (defaults filled in)."""
        return _crop_kwargs(self.crop, self.crop_scale, self.crop_ratio, self.crop_resize_range)

    def flips(self, splits) -> list:
        """Per split, whether this transform flips it (see :func:`split_flips`)."""
        return split_flips(splits, self.flip)

    def __call__(self, image, seed, spec, flip=True):
        """:func:`train_transform` of ``image`` at ``spec``'s sizes; ``flip`` is the image's
        split's flag (a bool or a scalar bool tensor)."""
        return train_transform(image, seed, spec.size, spec.resize, flip, **self.crop_kwargs)
