"""From listed images to model-ready tf.data pipelines.

Training transform (papers 000/001): resize to ``resize_size`` (256×256) → random ``image_size``
(224×224) crop → random horizontal flip. Evaluation: the same resize → centre crop, i.e. exactly
what the exported SavedModel does in-graph (``preprocess_ops.eval_transform``), so served and
evaluated embeddings agree. Pixels stay float32 in 0..255: normalisation is the model's job (its
``Preprocess`` layer), which keeps one pixel contract for training, evaluation and serving.

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
from tfembed.data.types import Split

AUTOTUNE = tf.data.AUTOTUNE


def train_transform(image, seed, image_size=(224, 224), resize_size=(256, 256), flip=True):
    """Resize → random crop → random flip, driven by a stateless ``seed`` ``[2]``.

    Args:
      image: ``uint8``/float ``[H, W, 3]`` pixels in 0..255.
      seed: ``int64 [2]`` stateless seed (one per element, derived from the recipe seed).
      image_size: crop size ``(h, w)``.
      resize_size: size ``(h, w)`` the image is resized to before cropping.
      flip: random horizontal flip.

    Returns:
      float32 ``[h, w, 3]`` in 0..255.
    """
    image_size, resize_size = as_size(image_size), as_size(resize_size)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    # The same resize as eval_transform (bilinear, anti-aliased), so train and test pixels match.
    image = tf.image.resize(tf.cast(image, tf.float32), resize_size, antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image = tf.image.stateless_random_crop(image, [*image_size, 3], seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return image


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
                     label_offsets: Optional[Sequence[int]] = None, image_size=(224, 224),
                     resize_size=(256, 256), flip=True, seed=0, multi_domain=None,
                     crop_boxes=False, student_view=None, low_resolution_size=50,
                     pairs=None, views=None, teacher_views=None, start_step=0):
    """Endless training batches of c×k images (or of 2·a images in pairs, see ``pairs``).

    Args:
      splits: the training split of each domain (one element for a single domain).
      classes_per_batch, images_per_class: c and k (ignored when ``pairs`` is given).
      policy, weights: multi-domain sampling policy (``sampling.POLICIES``).
      label_offsets: added to each domain's labels so labels are unique across domains
        (defaults to cumulative ``max label + 1``).
      image_size, resize_size, flip: the training transform.
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
        independent draws of the random crop and flip, ``{"images": view 0, "views":
        [B, L, H, W, 3]}`` (view 0 is the ordinary transform of the image).
      teacher_views: make the teacher's input deterministic so its embeddings can be cached
        (:class:`tfembed.models.TeacherCache`); adds ``"example"`` (the image's row in its
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

    def transform(image, seed_):
        return train_transform(image, seed_, image_size, resize_size, flip)

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
            return ({"images": transform(source, fixed_view_seed(seed, index, view)),
                     "example": index, "view": view}, domain, label)
        image = transform(source, seed_)
        if teacher_views == 0:
            return ({"images": eval_transform(source, image_size, resize_size),
                     "student_images": image, "example": index,
                     "view": tf.constant(0, tf.int32)}, domain, label)
        if student_view == "lowres":
            image = (image, low_resolution(image, low_resolution_size))
        elif student_view == "uncropped":
            image = (image, transform(raw, seed_))
        elif views is not None and int(views) > 1:
            # View v > 0: its own stateless draw of crop and flip (seed row v, same number).
            extra = [transform(source, aug_seed + [v * 0x9E37, number])
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
                         image_size=(224, 224), resize_size=(256, 256), flip=True, seed=0,
                         crop_boxes=False):
    """Every image a teacher cache holds for ``split``, example-major (row ``i·V + v``).

    ``teacher_views`` as in :func:`training_batches`: ``K`` >= 1 fixed augmented views per
    example (the same pixels :func:`training_batches` shows for ``(example, view)``), or ``0``
    for one evaluation-transform view. Yields image batches only.
    """
    teacher_views = check_teacher_views(teacher_views)
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
                               resize_size, flip)

    ds = tf.data.Dataset.range(len(split) * per_example)
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def split_labelled(split: Split, labelled_fraction: float, seed=0):
    """``(labelled, unlabelled)`` parts of a training split for semi-supervised training.

    Per class, a seeded random ``labelled_fraction`` of the images (at least one) stays
    labelled; the rest form the unlabelled split (its labels are kept for bookkeeping; the
    batches of :func:`unlabelled_batches` replace them with -1). 001 §5.2 uses 50 %.
    """
    if not 0.0 < labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(split), bool)
    for c in split.classes:
        rows = np.flatnonzero(split.labels == c)
        n = max(1, int(round(labelled_fraction * len(rows))))
        keep[rng.choice(rows, n, replace=False)] = True
    return split.subset(np.flatnonzero(keep)), split.subset(np.flatnonzero(~keep))


def unlabelled_batches(split: Split, batch_size: int, *, image_size=(224, 224),
                       resize_size=(256, 256), flip=True, seed=0, start_step=0):
    """Endless batches of uniformly shuffled images with label ``-1`` (unlabelled).

    The batch composition must not use the hidden labels (no class-balanced c×k sampling): an
    unlabelled stream only knows which images exist. Batches run across pass boundaries, so a
    split smaller than a batch still works (with repeats). Element n is image
    ``π_e(n mod N)`` of pass ``e = n // N``, with ``π_e`` a stateless permutation seeded by
    ``(seed, e)``: every image once per pass, and ``start_step`` (as in
    :func:`training_batches`) resumes the stream exactly.
    """
    if len(split) == 0:
        raise ValueError("the unlabelled split is empty")
    load = make_loader(split)
    n = len(split)
    aug_seed = tf.constant([seed, 0x51A], tf.int64)
    perm_seed = tf.constant([seed, 0x5A5], tf.int64)

    def element(number):
        pass_, position = number // n, number % n
        index = tf.random.experimental.index_shuffle(
            position, perm_seed + [0, pass_], n - 1)
        image = train_transform(load(index), aug_seed + [0, number], image_size, resize_size,
                                flip)
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


def eval_dataset(split: Split, batch_size=128, *, image_size=(224, 224), resize_size=(256, 256),
                 label_offset=0, domain: Optional[int] = None, crop_boxes=False,
                 low_resolution_size=0):
    """Every image of a split once, in order, with the evaluation transform.

    ``crop_boxes`` crops each image to its bounding box first; ``low_resolution_size`` > 0
    degrades the result as :func:`training_batches`' ``"lowres"`` view does (the test images of
    a cross-quality student).

    Returns ``(images, labels)`` batches, or ``({"images", "domain"}, labels)`` when ``domain``
    is given (for models that take the multi-domain input format).
    """
    load = make_loader(split)
    labels = tf.constant(split.labels + label_offset, tf.int64)
    image_size, resize_size = as_size(image_size), as_size(resize_size)
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
