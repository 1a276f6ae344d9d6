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
from tfembed.data.preprocess_ops import as_size, decode_image, eval_transform
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


def training_batches(splits: Sequence[Split], classes_per_batch: int, images_per_class: int, *,
                     policy: str = "domain_specific", weights=None,
                     label_offsets: Optional[Sequence[int]] = None, image_size=(224, 224),
                     resize_size=(256, 256), flip=True, seed=0, multi_domain=None):
    """Endless training batches of c×k images.

    Args:
      splits: the training split of each domain (one element for a single domain).
      classes_per_batch, images_per_class: c and k.
      policy, weights: multi-domain sampling policy (``sampling.POLICIES``).
      label_offsets: added to each domain's labels so labels are unique across domains
        (defaults to cumulative ``max label + 1``).
      image_size, resize_size, flip: the training transform.
      seed: recipe seed; the stream (images and augmentations) is a pure function of it.
      multi_domain: output format. False → ``(images, labels)``; True →
        ``({"images", "domain"}, labels)`` (DESIGN §4). Defaults to ``len(splits) > 1``.

    Returns:
      ``tf.data.Dataset`` of batches with static batch size c·k.
    """
    splits = list(splits)
    if multi_domain is None:
        multi_domain = len(splits) > 1
    offsets = default_label_offsets(splits) if label_offsets is None else list(label_offsets)
    batch = classes_per_batch * images_per_class
    loaders = [make_loader(s) for s in splits]
    labels = tf.constant(np.concatenate([s.labels for s in splits]), tf.int64)
    starts = tf.constant(np.cumsum([0] + [len(s) for s in splits])[:-1], tf.int64)
    offsets_t = tf.constant(offsets, tf.int64)
    aug_seed = tf.constant([seed, 0xA06], tf.int64)

    def element(number, pair):
        domain, index = pair
        image = _load_from_domains(loaders, domain, index)
        image = train_transform(image, aug_seed + [0, number], image_size, resize_size, flip)
        label = tf.gather(labels, starts[domain] + index) + offsets_t[domain]
        return image, domain, label

    ds = sampling.batch_indices([s.labels for s in splits], classes_per_batch, images_per_class,
                                policy=policy, weights=weights, seed=seed)
    ds = ds.unbatch().enumerate()
    ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    return ds.map(lambda x, d, y: _format(x, d, y, multi_domain)).prefetch(AUTOTUNE)


def _format(images, domain, labels, multi_domain):
    if multi_domain:
        return {"images": images, "domain": domain}, labels
    return images, labels


def eval_dataset(split: Split, batch_size=128, *, image_size=(224, 224), resize_size=(256, 256),
                 label_offset=0, domain: Optional[int] = None):
    """Every image of a split once, in order, with the evaluation transform.

    Returns ``(images, labels)`` batches, or ``({"images", "domain"}, labels)`` when ``domain``
    is given (for models that take the multi-domain input format).
    """
    load = make_loader(split)
    labels = tf.constant(split.labels + label_offset, tf.int64)
    image_size, resize_size = as_size(image_size), as_size(resize_size)

    def element(index):
        image = eval_transform(load(index), image_size, resize_size)
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
