"""From listed images to model-ready tf.data pipelines.

Training transform (papers 000/001): resize to ``resize_size`` (256×256) → random ``image_size``
(224×224) crop → random horizontal flip (crop mode ``"resize_crop"``, the default). Two more crop
modes for view diversity (003): ``"random_resized"`` (torchvision's RandomResizedCrop: a box of
random area fraction and aspect ratio of the source image, resized to ``image_size``) and
``"multi_resolution"`` (HORDE's: the image resized, aspect kept, so that its longer side is a
random multiple of ``image_size``, then a random ``image_size`` crop, zero-padded where the image
is smaller) — see :func:`train_transform`. The flip obeys each split's policy (``Split.hflip``,
from ``Domain.hflip``): text domains are never mirrored.

Evaluation: the same resize → centre crop, i.e. exactly what the exported SavedModel does
in-graph (``preprocess_ops.eval_transform``), so served and evaluated embeddings agree. Pixels
stay float32 in 0..255: normalisation is the model's job (its ``Preprocess`` layer), which keeps
one pixel contract for training, evaluation and serving.

Grey and RGBA inputs become RGB when decoded; in-memory demo images (``[N, H, W, 1]``) are tiled
to 3 channels.
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfembed.data import sampling
from tfembed.data.preprocess_ops import (
    as_size,
    crop_to_box,
    decode_image,
    eval_transform,
    low_resolution,
)
from tfembed.data.types import Split, resolve_sizes

AUTOTUNE = tf.data.AUTOTUNE


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


def make_loader(split: Split):
    """``index -> uint8 [H, W, 3]`` for one split (file paths, or pixels held in memory)."""
    if split.images is not None:
        images = np.asarray(split.images, np.uint8)
        if images.ndim == 3:
            images = images[..., None]
        images = tf.constant(images)

        def load(index):
            image = tf.gather(images, index)
            if image.shape[-1] == 1:
                image = tf.tile(image, [1, 1, 3])
            elif image.shape[-1] == 4:
                image = image[..., :3]
            return image
    else:
        paths = tf.constant([str(p) for p in split.paths])

        def load(index):
            return decode_image(tf.io.read_file(tf.gather(paths, index)))
    return load


def _load_from_domains(loaders, domain, index):
    if len(loaders) == 1:
        return loaders[0](index)
    # Domains store images of different sizes; every branch returns [None, None, 3].
    return tf.switch_case(domain, [lambda f=f: tf.cast(f(index), tf.uint8) for f in loaders])


STUDENT_VIEWS = ("lowres", "uncropped")


def _boxes_tensor(splits):
    """``float32 [N, 4]`` boxes of the concatenated splits (a ValueError if any split has none)."""
    for i, split in enumerate(splits):
        if split.boxes is None:
            raise ValueError(f"crop_boxes needs bounding boxes, but split {i} has none "
                             "(Split.boxes; the CUB-200-2011 and CARS196 readers provide them)")
    return tf.constant(np.concatenate([s.boxes for s in splits]).astype(np.float32))


def _check_student_view(student_view):
    if student_view is not None and student_view not in STUDENT_VIEWS:
        raise ValueError(f"student_view must be None or one of {STUDENT_VIEWS}, got "
                         f"{student_view!r}")


def training_batches(splits: Sequence[Split], classes_per_batch: int, images_per_class: int, *,
                     policy: str = "domain_specific", weights=None,
                     label_offsets: Optional[Sequence[int]] = None, spec=None, image_size=None,
                     resize_size=None, flip=True, crop="resize_crop", crop_scale=None,
                     crop_ratio=None, crop_resize_range=None, seed=0, multi_domain=None,
                     crop_boxes=False, student_view=None, low_resolution_size=50,
                     pairs=None, views=None, teacher_views=None, start_step=0):
    """Endless training batches of c×k images (or of 2·a images in pairs, see ``pairs``).

    Args:
      splits: the training split of each domain (one element for a single domain).
      classes_per_batch, images_per_class: c and k (ignored when ``pairs`` is given).
      policy, weights: multi-domain sampling policy (``sampling.POLICIES``).
      label_offsets: added to each domain's labels so labels are unique across domains
        (defaults to cumulative ``max label + 1``).
      spec: the model the batches are for, or its :class:`~tfembed.data.ImageSpec`: the sizes
        come from it (``image_size``/``resize_size``, if also given, must agree).
      image_size, resize_size: the training transform's sizes (:func:`train_transform`) without a
        ``spec``; default 224 and 256.
      flip: random horizontal flip: a bool, or one bool per split (e.g. ``train.flip and
        domain.hflip`` per domain); inside the graph each element uses its own domain's. A split
        whose ``hflip`` is False (a text domain) is never flipped either way.
      crop, crop_scale, crop_ratio, crop_resize_range: the crop mode of :func:`train_transform`
        (``"resize_crop"``, ``"random_resized"``, ``"multi_resolution"``) and its ranges.
      seed: recipe seed; the stream (images and augmentations) is a pure function of it.
      multi_domain: output format. False → ``(images, labels)``; True →
        ``({"images", "domain"}, labels)`` (DESIGN §4). Defaults to ``len(splits) > 1``.
      crop_boxes: crop every image to its bounding box first (``Split.boxes``).
      student_view: cross-quality distillation (001 §5.4): also emit a degraded view of every
        image for the student, ``{"images": clean, "student_images": degraded}``:
        ``"lowres"`` (the clean view down-sampled to ``low_resolution_size`` and back up) or
        ``"uncropped"`` (the clean view is the box crop, the student's the whole image; both
        with the same crop/flip draw).
      low_resolution_size: side of the ``"lowres"`` view before up-sampling (50 in 001).
      pairs: ``(num_anchors, num_positive)`` for the pair sampler of paper 002
        (``sampling.pair_batch_indices``): batches of ``2 * num_anchors`` images interleaved
        ``[a0, p0, a1, p1, ...]``, the first ``num_positive`` pairs positive, the rest negative.
        Single split only; ``classes_per_batch``, ``images_per_class``, ``policy`` and
        ``weights`` are then ignored.

      views: ``L`` > 1: view diversity of a cohort (003 §3.2): every image also gets ``L``
        independent draws of the random crop and flip (with ``crop="random_resized"`` or
        ``"multi_resolution"`` each view has its own scale, aspect and position),
        ``{"images": view 0, "views": [B, L, H, W, 3]}`` (view 0 is the ordinary transform of
        the image).
      teacher_views: make the teacher's input deterministic so its embeddings can be cached
        (:class:`tfembed.distill.TeacherCache`); adds ``"example"`` (the image's row in its
        domain's split) and ``"view"`` to the inputs. ``K`` >= 1: every image is one of ``K``
        fixed augmented views of its example (crop and flip seeded by ``(seed, example,
        view)``, the view drawn per element), seen by teacher and student alike. ``0``: the
        teacher sees the evaluation transform (``"images"``, view 0) and the student the
        ordinary random augmentation (``"student_images"``). None: neither key (the default).
      start_step: number of the first batch. Images and augmentations are a pure function of
        ``(seed, batch number)``, so ``start_step=s`` yields exactly batches ``s, s+1, ...`` of
        the stream from 0, without computing the first ``s`` (how a resumed run continues).

    Returns:
      ``tf.data.Dataset`` of batches with static batch size c·k (2·num_anchors with ``pairs``).
    """
    splits = list(splits)
    image_size, resize_size = resolve_sizes(image_size, resize_size, spec)
    _check_student_view(student_view)
    if views is not None and (int(views) < 1 or student_view is not None):
        raise ValueError(f"views must be >= 1 and cannot be combined with student_view, got "
                         f"views={views!r}, student_view={student_view!r}")
    if teacher_views is not None:
        teacher_views = check_teacher_views(teacher_views)
        if student_view is not None or views is not None or pairs is not None:
            raise ValueError("teacher_views (a cached teacher's fixed inputs) cannot be combined "
                             "with student_view, views or pairs")
    if pairs is None:
        indices = sampling.batch_indices([s.labels for s in splits], classes_per_batch,
                                         images_per_class, policy=policy, weights=weights,
                                         seed=seed, start_step=start_step)
        batch = classes_per_batch * images_per_class
    else:
        if len(splits) != 1:
            raise ValueError(f"pairs=(num_anchors, num_positive) needs exactly one split, got "
                             f"{len(splits)}")
        try:
            num_anchors, num_positive = pairs
        except (TypeError, ValueError):
            raise ValueError(f"pairs must be (num_anchors, num_positive), got {pairs!r}") from None
        indices = sampling.pair_batch_indices(splits[0].labels, num_anchors, num_positive,
                                              seed=seed, start_step=start_step)
        batch = 2 * int(num_anchors)
    if multi_domain is None:
        multi_domain = len(splits) > 1
    offsets = default_label_offsets(splits) if label_offsets is None else list(label_offsets)
    loaders = [make_loader(s) for s in splits]
    labels = tf.constant(np.concatenate([s.labels for s in splits]), tf.int64)
    starts = tf.constant(np.cumsum([0] + [len(s) for s in splits])[:-1], tf.int64)
    offsets_t = tf.constant(offsets, tf.int64)
    aug_seed = tf.constant([seed, 0xA06], tf.int64)
    view_pick = tf.constant([seed, 0x71E5], tf.int64)
    boxes = _boxes_tensor(splits) if crop_boxes or student_view == "uncropped" else None
    crop_kw = _crop_kwargs(crop, crop_scale, crop_ratio, crop_resize_range)
    flips = split_flips(splits, flip)
    # One policy for every split: decided when the graph is built (the single-domain graph is
    # unchanged); else per element, by its domain.
    flips_t = None if len(set(flips)) == 1 else tf.constant(flips)

    def transform(image, seed_, domain):
        flag = flips[0] if flips_t is None else tf.gather(flips_t, domain)
        return train_transform(image, seed_, image_size, resize_size, flag, **crop_kw)

    def element(number, pair):
        domain, index = pair
        raw = _load_from_domains(loaders, domain, index)
        row = starts[domain] + index
        seed_ = aug_seed + [0, number]
        source = crop_to_box(raw, boxes[row]) if boxes is not None else raw
        label = tf.gather(labels, row) + offsets_t[domain]
        if teacher_views:
            # Which of the K fixed views this draw shows: a stateless function of the element
            # number (the stream stays resumable); the view's pixels depend on (example, view).
            view = tf.random.stateless_uniform([], view_pick + [0, number], 0, teacher_views,
                                               dtype=tf.int32)
            return ({"images": transform(source, fixed_view_seed(seed, index, view), domain),
                     "example": index, "view": view}, domain, label)
        image = transform(source, seed_, domain)
        if teacher_views == 0:
            return ({"images": eval_transform(source, image_size, resize_size),
                     "student_images": image, "example": index,
                     "view": tf.constant(0, tf.int32)}, domain, label)
        if student_view == "lowres":
            image = (image, low_resolution(image, low_resolution_size))
        elif student_view == "uncropped":
            image = (image, transform(raw, seed_, domain))
        elif views is not None and int(views) > 1:
            # View v > 0: its own stateless draw of crop and flip (seed row v, same number).
            extra = [transform(source, aug_seed + [v * 0x9E37, number], domain)
                     for v in range(1, int(views))]
            image = {"images": image, "views": tf.stack([image] + extra)}
        return image, domain, label

    # Element numbers (the augmentation seeds) continue from the first batch's.
    ds = indices.unbatch().enumerate(start=int(start_step) * batch)
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    return ds.map(lambda x, d, y: _format(x, d, y, multi_domain)).prefetch(AUTOTUNE)


def check_teacher_views(teacher_views):
    if isinstance(teacher_views, bool) or int(teacher_views) != teacher_views or teacher_views < 0:
        raise ValueError(f"teacher_views must be an int >= 0 (0: the evaluation transform, K: K "
                         f"fixed augmented views), got {teacher_views!r}")
    return int(teacher_views)


def fixed_view_seed(seed, example, view):
    """The stateless augmentation seed of view ``view`` of ``example`` (its row in the split).

    Independent of when the pair is drawn, so the pixels (and a frozen teacher's embedding of
    them) are the same every time: what makes a teacher cache exact.
    """
    base = tf.constant([seed, 0xCAC4E], tf.int64)
    base = tf.random.experimental.stateless_fold_in(base, tf.cast(example, tf.int64))
    return tf.random.experimental.stateless_fold_in(base, tf.cast(view, tf.int64))


def teacher_view_dataset(split: Split, teacher_views: int, batch_size=128, *,
                         image_size=(224, 224), resize_size=(256, 256), flip=True,
                         crop="resize_crop", crop_scale=None, crop_ratio=None,
                         crop_resize_range=None, seed=0, crop_boxes=False):
    """Every image a teacher cache holds for ``split``, example-major (row ``i·V + v``).

    ``teacher_views`` as in :func:`training_batches`: ``K`` >= 1 fixed augmented views per
    example (the same pixels :func:`training_batches` shows for ``(example, view)``, with the
    same ``flip`` — a bool or a one-element sequence, and never where ``split.hflip`` is False —
    and crop mode), or ``0`` for one evaluation-transform view. Yields image batches only.
    """
    teacher_views = check_teacher_views(teacher_views)
    flip = split_flips([split], flip)[0]
    crop_kw = _crop_kwargs(crop, crop_scale, crop_ratio, crop_resize_range)
    per_example = max(teacher_views, 1)
    load = make_loader(split)
    boxes = _boxes_tensor([split]) if crop_boxes else None

    def element(number):
        index, view = number // per_example, number % per_example
        image = load(index)
        if boxes is not None:
            image = crop_to_box(image, boxes[index])
        if not teacher_views:
            return eval_transform(image, image_size, resize_size)
        return train_transform(image, fixed_view_seed(seed, index, view), image_size,
                               resize_size, flip, **crop_kw)

    ds = tf.data.Dataset.range(len(split) * per_example)
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def split_labelled(split: Split, labelled_fraction: float, seed=0):
    """``(labelled, unlabelled)`` parts of a training split for semi-supervised training.

    Per class, a seeded random ``labelled_fraction`` of the images (at least one) stays
    labelled; the rest form the unlabelled split (its labels are kept for bookkeeping; the
    batches of :func:`unlabelled_batches` replace them with -1). 001 §5.2 uses 50 %.
    """
    keep = labelled_mask(split, labelled_fraction, seed=seed)
    return split.subset(np.flatnonzero(keep)), split.subset(np.flatnonzero(~keep))


def labelled_mask(split: Split, labelled_fraction: float, seed=0) -> np.ndarray:
    """``bool [N]``: the rows of ``split`` that :func:`split_labelled` keeps labelled (the same
    seeded draw), for callers that must cut the split further without redrawing it."""
    if not 0.0 < labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(split), bool)
    for c in split.classes:
        rows = np.flatnonzero(split.labels == c)
        n = max(1, int(round(labelled_fraction * len(rows))))
        keep[rng.choice(rows, n, replace=False)] = True
    return keep


def unlabelled_batches(split: Split, batch_size: int, *, spec=None, image_size=None,
                       resize_size=None, flip=True, crop="resize_crop", crop_scale=None,
                       crop_ratio=None, crop_resize_range=None, seed=0, start_step=0):
    """Endless batches of uniformly shuffled images with label ``-1`` (unlabelled).

    The batch composition must not use the hidden labels (no class-balanced c×k sampling): an
    unlabelled stream only knows which images exist. Batches run across pass boundaries, so a
    split smaller than a batch still works (with repeats). Element n is image
    ``π_e(n mod N)`` of pass ``e = n // N``, with ``π_e`` a stateless permutation seeded by
    ``(seed, e)``: every image once per pass, and ``start_step`` (as in
    :func:`training_batches`) resumes the stream exactly. ``spec``, the sizes, ``flip`` (a bool
    or a one-element sequence; never where ``split.hflip`` is False) and the crop keys: as
    :func:`training_batches`.
    """
    image_size, resize_size = resolve_sizes(image_size, resize_size, spec)
    if len(split) == 0:
        raise ValueError("the unlabelled split is empty")
    flip = split_flips([split], flip)[0]
    crop_kw = _crop_kwargs(crop, crop_scale, crop_ratio, crop_resize_range)
    load = make_loader(split)
    n = len(split)
    aug_seed = tf.constant([seed, 0x51A], tf.int64)
    perm_seed = tf.constant([seed, 0x5A5], tf.int64)

    def element(number):
        pass_, position = number // n, number % n
        index = tf.random.experimental.index_shuffle(
            position, perm_seed + [0, pass_], n - 1)
        image = train_transform(load(index), aug_seed + [0, number], image_size, resize_size,
                                flip, **crop_kw)
        return image, tf.constant(-1, tf.int64)

    ds = tf.data.Dataset.counter(int(start_step) * int(batch_size))
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def _format(images, domain, labels, multi_domain):
    if isinstance(images, dict):
        x = dict(images)
    elif isinstance(images, tuple):
        x = {"images": images[0], "student_images": images[1]}
    else:
        x = {"images": images}
    if multi_domain:
        x["domain"] = domain
    return (x if len(x) > 1 else x["images"]), labels


def eval_dataset(split: Split, batch_size=128, *, spec=None, image_size=None, resize_size=None,
                 label_offset=0, domain: Optional[int] = None, crop_boxes=False,
                 low_resolution_size=0):
    """Every image of a split once, in order, with the evaluation transform.

    ``spec``: the model (or its :class:`~tfembed.data.ImageSpec`) whose sizes the transform
    uses; else ``image_size``/``resize_size`` (default 224 and 256).

    ``crop_boxes`` crops each image to its bounding box first; ``low_resolution_size`` > 0
    degrades the result as :func:`training_batches`' ``"lowres"`` view does (the test images of
    a cross-quality student).

    Returns ``(images, labels)`` batches, or ``({"images", "domain"}, labels)`` when ``domain``
    is given (for models that take the multi-domain input format).
    """
    load = make_loader(split)
    labels = tf.constant(split.labels + label_offset, tf.int64)
    image_size, resize_size = resolve_sizes(image_size, resize_size, spec)
    boxes = _boxes_tensor([split]) if crop_boxes else None

    def element(index):
        image = load(index)
        if boxes is not None:
            image = crop_to_box(image, boxes[index])
        image = eval_transform(image, image_size, resize_size)
        if low_resolution_size:
            image = low_resolution(image, low_resolution_size)
        return image, tf.gather(labels, index)

    ds = tf.data.Dataset.range(len(split)).map(element, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    if domain is not None:
        ds = ds.map(lambda x, y: _format(x, tf.fill(tf.shape(y), tf.constant(domain, tf.int32)),
                                         y, True))
    return ds.prefetch(AUTOTUNE)


def default_label_offsets(splits_or_domains):
    """Cumulative offsets making labels unique across domains (max label + 1 each)."""
    offsets, total = [], 0
    for item in splits_or_domains:
        offsets.append(total)
        total += int(getattr(item, "num_classes", 0) or (np.max(item.labels) + 1))
    return offsets
