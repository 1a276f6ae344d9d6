"""From listed images to model-ready tf.data pipelines: sampler → transform → view → batches.

A training stream is composed from small parts (:func:`batches`):

* a **sampler** picks each batch's ``(domain, index)`` rows (``tfembed.data.samplers``:
  :class:`ClassBalanced` c×k with a domain policy, :class:`Pairs` for 002, :class:`Uniform` for
  an unlabelled stream);
* the image is loaded (cropped to its bounding box with ``crop_boxes``) and the **transform**
  (:class:`~tfembed.data.transforms.Augment`: crop mode and flip, at the sizes of the model's
  :class:`~tfembed.data.ImageSpec`) draws its augmentation;
* the **view** (``tfembed.data.views``) decides what the element shows: one view, or the extra
  views a method needs (a student's degraded view, a cohort's views, a cached teacher's keys);
* elements are batched in the DESIGN §4 format: ``images`` or ``({"images", ...}, labels)``,
  with ``"domain"`` when several domains are mixed.

:func:`training_batches` and :func:`unlabelled_batches` are the two common compositions.

Evaluation: resize → centre crop, exactly what the exported SavedModel does in-graph
(``transforms.eval_transform``), so served and evaluated embeddings agree. Pixels stay float32
in 0..255: normalisation is the model's job (its ``Preprocess`` layer), which keeps one pixel
contract for training, evaluation and serving. Grey and RGBA inputs become RGB when decoded;
in-memory demo images (``[N, H, W, 1]``) are tiled to 3 channels.
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfembed.data.samplers import ClassBalanced, Uniform
from tfembed.data.transforms import (
    Augment,
    crop_to_box,
    decode_image,
    eval_transform,
    low_resolution,
)
from tfembed.data.types import ImageSpec, Split
from tfembed.data.views import Draw, check_teacher_views, fixed_view_seed, single_view

AUTOTUNE = tf.data.AUTOTUNE


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


def _boxes_tensor(splits):
    """``float32 [N, 4]`` boxes of the concatenated splits (a ValueError if any split has none)."""
    for i, split in enumerate(splits):
        if split.boxes is None:
            raise ValueError(f"crop_boxes needs bounding boxes, but split {i} has none "
                             "(Split.boxes; the CUB-200-2011 and CARS196 readers provide them)")
    return tf.constant(np.concatenate([s.boxes for s in splits]).astype(np.float32))


def batches(splits: Sequence[Split], sampler, *, spec=None, augment: Optional[Augment] = None,
            view=None, seed=0, start_step=0, label_offsets: Optional[Sequence[int]] = None,
            multi_domain=None, crop_boxes=False):
    """An endless training stream: ``sampler`` → load → ``augment`` → ``view`` → batches.

    Args:
      splits: the training split of each domain (one element for a single domain).
      sampler: which rows form each batch (``samplers.ClassBalanced``, ``samplers.Pairs``,
        ``samplers.Uniform``; any object with ``batch_size`` and ``sampler(labels_per_domain,
        seed, start_step)`` giving ``(domain [B], index [B])`` batches; optional attributes
        ``labelled`` (False: labels -1) and ``augment_salt`` (its augmentation seed stream)).
      spec: the model the batches are for, or its :class:`~tfembed.data.ImageSpec` (the sizes of
        the transform); default the standard 224/256.
      augment: the crop mode and flip (:class:`~tfembed.data.transforms.Augment`, default its
        defaults). Inside the graph each element uses its own domain's flip.
      view: what each element shows (``tfembed.data.views``; None: one augmented view).
      seed: recipe seed; the stream (images and augmentations) is a pure function of it.
      start_step: number of the first batch. Images and augmentations are a pure function of
        ``(seed, batch number)``, so ``start_step=s`` yields exactly batches ``s, s+1, ...`` of
        the stream from 0, without computing the first ``s`` (how a resumed run continues).
      label_offsets: added to each domain's labels so labels are unique across domains
        (defaults to cumulative ``max label + 1``).
      multi_domain: output format. False → ``(images, labels)``; True →
        ``({"images", "domain"}, labels)`` (DESIGN §4). Defaults to ``len(splits) > 1``.
      crop_boxes: crop every image to its bounding box first (``Split.boxes``).

    Returns:
      ``tf.data.Dataset`` of batches of static size ``sampler.batch_size``: ``(x, labels)`` with
      ``x`` the images, or a dict of the view's inputs (+ ``"domain"``); labels are -1 for an
      unlabelled sampler.
    """
    splits = list(splits)
    spec = ImageSpec.of(spec)
    augment = Augment() if augment is None else augment
    view = single_view if view is None else view
    batch = int(sampler.batch_size)
    indices = sampler([s.labels for s in splits], seed=seed, start_step=start_step)
    if multi_domain is None:
        multi_domain = len(splits) > 1
    offsets = default_label_offsets(splits) if label_offsets is None else list(label_offsets)
    loaders = [make_loader(s) for s in splits]
    labels = tf.constant(np.concatenate([s.labels for s in splits]), tf.int64)
    starts = tf.constant(np.cumsum([0] + [len(s) for s in splits])[:-1], tf.int64)
    offsets_t = tf.constant(offsets, tf.int64)
    stream_seed = tf.constant([seed, getattr(sampler, "augment_salt", ClassBalanced.augment_salt)],
                              tf.int64)
    labelled = getattr(sampler, "labelled", True)
    boxes = (_boxes_tensor(splits) if crop_boxes or getattr(view, "needs_boxes", False)
             else None)
    flips = augment.flips(splits)
    # One policy for every split: decided when the graph is built (the single-domain graph is
    # unchanged); else per element, by its domain.
    flips_t = None if len(set(flips)) == 1 else tf.constant(flips)

    def element(number, pair):
        domain, index = pair
        raw = _load_from_domains(loaders, domain, index)
        row = starts[domain] + index
        source = crop_to_box(raw, boxes[row]) if boxes is not None else raw
        flip = flips[0] if flips_t is None else tf.gather(flips_t, domain)
        inputs = view(Draw(source, raw, index, number, seed, stream_seed, spec, augment, flip,
                           domain))
        if labelled:
            label = tf.gather(labels, row) + offsets_t[domain]
        else:
            label = tf.constant(-1, tf.int64)
        return inputs, domain, label

    # Element numbers (the augmentation seeds) continue from the first batch's.
    ds = indices.unbatch().enumerate(start=int(start_step) * batch)
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    return ds.map(lambda x, d, y: _format(x, d, y, multi_domain)).prefetch(AUTOTUNE)


def training_batches(splits: Sequence[Split], classes_per_batch: int, images_per_class: int, *,
                     policy: str = "domain_specific", weights=None, **options):
    """Endless class-balanced batches of c×k images: :func:`batches` with a
    :class:`~tfembed.data.samplers.ClassBalanced` sampler (``policy``, ``weights``: the
    multi-domain sampling policy, ``samplers.POLICIES``).

    ``options``: the keywords of :func:`batches` (``spec``, ``augment``, ``view``, ``seed``,
    ``start_step``, ``label_offsets``, ``multi_domain``, ``crop_boxes``).

    >>> ds = training_batches([cub.train], 8, 4, spec=model, view=StudentView("lowres"))
    """
    sampler = ClassBalanced(classes_per_batch, images_per_class, policy, weights)
    return batches(splits, sampler, **options)


def unlabelled_batches(split: Split, batch_size: int, **options):
    """Endless batches of uniformly shuffled images with label ``-1``: :func:`batches` with a
    :class:`~tfembed.data.samplers.Uniform` sampler (every image once per pass, resumable from
    ``start_step``). ``options``: ``spec``, ``augment``, ``seed``, ``start_step``."""
    return batches([split], Uniform(batch_size), **options)


def teacher_view_dataset(split: Split, teacher_views: int, batch_size=128, *, spec=None,
                         augment: Optional[Augment] = None, seed=0, crop_boxes=False):
    """Every image a teacher cache holds for ``split``, example-major (row ``i·V + v``).

    ``teacher_views`` as :class:`~tfembed.data.views.TeacherCacheViews`: ``K`` >= 1 fixed
    augmented views per example (the same pixels a stream with ``TeacherCacheViews(K)`` shows
    for ``(example, view)``, with the same ``augment``: never flipped where ``split.hflip`` is
    False), or ``0`` for one evaluation-transform view. Yields image batches only.
    """
    teacher_views = check_teacher_views(teacher_views)
    spec = ImageSpec.of(spec)
    augment = Augment() if augment is None else augment
    flip = augment.flips([split])[0]
    per_example = max(teacher_views, 1)
    load = make_loader(split)
    boxes = _boxes_tensor([split]) if crop_boxes else None

    def element(number):
        index, view = number // per_example, number % per_example
        image = load(index)
        if boxes is not None:
            image = crop_to_box(image, boxes[index])
        if not teacher_views:
            return eval_transform(image, spec.size, spec.resize)
        return augment(image, fixed_view_seed(seed, index, view), spec, flip)

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


def _format(images, domain, labels, multi_domain):
    x = dict(images)
    if multi_domain:
        x["domain"] = domain
    return (x if len(x) > 1 else x["images"]), labels


def eval_dataset(split: Split, batch_size=128, *, spec=None, label_offset=0,
                 domain: Optional[int] = None, crop_boxes=False, low_resolution_size=0):
    """Every image of a split once, in order, with the evaluation transform.

    ``spec``: the model (or its :class:`~tfembed.data.ImageSpec`) whose sizes the transform
    uses; default the standard 224/256.

    ``crop_boxes`` crops each image to its bounding box first; ``low_resolution_size`` > 0
    degrades the result as :class:`~tfembed.data.views.StudentView` ``"lowres"`` does (the test
    images of a cross-quality student).

    Returns ``(images, labels)`` batches, or ``({"images", "domain"}, labels)`` when ``domain``
    is given (for models that take the multi-domain input format).
    """
    load = make_loader(split)
    labels = tf.constant(split.labels + label_offset, tf.int64)
    spec = ImageSpec.of(spec)
    boxes = _boxes_tensor([split]) if crop_boxes else None

    def element(index):
        image = load(index)
        if boxes is not None:
            image = crop_to_box(image, boxes[index])
        image = eval_transform(image, spec.size, spec.resize)
        if low_resolution_size:
            image = low_resolution(image, low_resolution_size)
        return image, tf.gather(labels, index)

    ds = tf.data.Dataset.range(len(split)).map(element, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    if domain is not None:
        ds = ds.map(lambda x, y: _format(
            {"images": x}, tf.fill(tf.shape(y), tf.constant(domain, tf.int32)), y, True))
    return ds.prefetch(AUTOTUNE)


def default_label_offsets(splits_or_domains):
    """Cumulative offsets making labels unique across domains (max label + 1 each)."""
    offsets, total = [], 0
    for item in splits_or_domains:
        offsets.append(total)
        total += int(getattr(item, "num_classes", 0) or (np.max(item.labels) + 1))
    return offsets
