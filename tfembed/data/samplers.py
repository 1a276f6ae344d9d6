"""Batch builders: which images go into a batch, as small ``ds -> ds`` steps.

A training batch is c classes × k images (k=4 in paper 000). With several domains a batch is
*domain specific* (every image from one domain, the domain drawn ∝ its image count), *domain
balanced* (domain drawn uniformly), *weighted* (explicit per-domain weights, e.g. ×10 for a small
domain next to ImageNet, 000 §5.3) or *naive* (c classes drawn from the union of all domains, so
one batch mixes domains).

Everything here is a stateless function of ``(seed, step)``: ``Dataset.counter()`` numbers the
batches and every random draw uses ``tf.random.stateless_*`` with a seed derived from it. So the
stream is reproducible from the recipe seed, has no Python-side randomness, and the position of a
tf.data iterator is enough to resume it (tf.data checkpoints the counter).

The sampler yields ``(domain [B] int32, index [B] int64)``: index is a row of that domain's split.
``pipeline.py`` turns those into pixels.

:func:`pair_batch_indices` is the pair sampler of paper 002 (ABE, §4): ``a`` distinct random
anchor images, then a positive partner (same class) for the first ``p`` of them and a negative
partner (another class) for the rest, interleaved ``[a0, p0, a1, p1, ...]`` into a batch of 2a
(single domain; the same ``(domain, index)`` output).

The samplers a pipeline takes are small objects over these functions: :class:`ClassBalanced`
(c×k with a domain policy), :class:`Pairs` (002) and :class:`Uniform` (an unlabelled stream).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

POLICIES = ("domain_specific", "domain_balanced", "weighted", "naive")


class _ClassIndex:
    """Per-class row lists of one split, packed as constant tensors (CSR layout)."""

    def __init__(self, labels):
        labels = np.asarray(labels, np.int64)
        if labels.size == 0:
            raise ValueError("cannot sample batches from an empty split")
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self.num_classes = len(classes)
        self.max_count = int(counts.max())
        self.order = tf.constant(order, tf.int64)
        self.starts = tf.constant(starts, tf.int64)
        self.counts = tf.constant(counts, tf.int64)

    def sample(self, seed, classes_per_batch, images_per_class):
        """Rows of ``c`` random classes × ``k`` random images each, as ``[c * k]`` int64.

        Classes are drawn without replacement (a split with fewer than c classes cycles through
        all of them); images of a class without replacement, except that a class with fewer
        than k images repeats some of them — so small classes still work.
        """
        c, k = classes_per_batch, images_per_class
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if self.num_classes >= c:
            noise = tf.random.stateless_uniform([self.num_classes], seeds[0])
            chosen = tf.math.top_k(noise, k=c).indices
        else:
            # Fewer classes than c: every class once, then again, in a random order, so the
            # batch stays as balanced as the split allows.
            noise = tf.random.stateless_uniform([self.num_classes], seeds[0])
            perm = tf.argsort(noise)
            chosen = tf.tile(perm, [-(-c // self.num_classes)])[:c]
        counts = tf.gather(self.counts, chosen)
        starts = tf.gather(self.starts, chosen)
        # A random k-subset of each class: the k smallest of uniform noise over its rows. Columns
        # past a class's size get noise 2 so they are never picked unless the class has < k rows;
        # then ``% count`` folds them back onto real rows (repeats).
        noise = tf.random.stateless_uniform([c, self.max_count], seeds[1])
        columns = tf.range(self.max_count, dtype=tf.int64)[None, :]
        noise = tf.where(columns < counts[:, None], noise, 2.0)
        pos = tf.cast(tf.math.top_k(-noise, k=min(k, self.max_count)).indices, tf.int64)
        if k > self.max_count:  # every class is smaller than k: tile positions, then fold
            pos = tf.tile(pos, [1, -(-k // self.max_count)])[:, :k]
        pos = pos % counts[:, None]
        return tf.reshape(tf.gather(self.order, starts[:, None] + pos), [-1])


class _PairIndex(_ClassIndex):
    """A :class:`_ClassIndex` that also knows, per row, its class slot and its position in it."""

    def __init__(self, labels):
        super().__init__(labels)
        order = self.order.numpy()
        starts, counts = self.starts.numpy(), self.counts.numpy()
        self.num_rows = len(order)
        # Class slot (0..num_classes-1, in sorted-label order) of every position of ``order``.
        slot_sorted = np.repeat(np.arange(self.num_classes, dtype=np.int64), counts)
        row_class = np.empty(self.num_rows, np.int64)
        row_class[order] = slot_sorted
        row_offset = np.empty(self.num_rows, np.int64)
        row_offset[order] = np.arange(self.num_rows, dtype=np.int64) - starts[slot_sorted]
        self.row_class = tf.constant(row_class, tf.int64)
        self.row_offset = tf.constant(row_offset, tf.int64)

    def sample_pairs(self, seed, num_anchors, num_positive):
        """``[2 * num_anchors]`` int64 rows ``[a0, p0, a1, p1, ...]`` for a stateless ``seed``.

        Anchors are distinct rows drawn uniformly without replacement. The partner of anchors
        ``0..num_positive-1`` is uniform over the *other* rows of the anchor's class (the anchor
        row itself when its class has a single image); the partner of the remaining anchors is
        uniform over all rows of the other classes. Cost: O(N) for the anchor draw, O(a) for the
        partners; never an ``[N, N]`` tensor.
        """
        a, p = num_anchors, num_positive
        n = self.num_rows
        seeds = tf.random.experimental.stateless_split(seed, 2)
        # a distinct rows: the a largest of uniform noise over all rows.
        noise = tf.random.stateless_uniform([n], seeds[0])
        anchors = tf.cast(tf.math.top_k(noise, k=a).indices, tf.int64)
        slot = tf.gather(self.row_class, anchors)
        start = tf.gather(self.starts, slot)
        count = tf.gather(self.counts, slot)
        offset = tf.gather(self.row_offset, anchors)
        # One uniform draw per anchor, scaled to the anchor's own range below. float64 keeps the
        # floor() bias negligible even for ranges of 10^5; the clamp guards u * m rounding to m.
        u = tf.random.stateless_uniform([a], seeds[1], dtype=tf.float64)

        def uniform_int(m):  # uniform int in [0, m) per anchor (0 when m == 0)
            m = tf.maximum(m, 1)
            k = tf.cast(tf.floor(u * tf.cast(m, tf.float64)), tf.int64)
            return tf.minimum(k, m - 1)

        # Positive: another position of the anchor's class block, skipping the anchor's own
        # (offset + 1 + [0, count-1)) mod count; a class of one image yields the anchor itself.
        pos = (offset + 1 + uniform_int(count - 1)) % count
        positive = start + pos
        # Negative: one of the n - count positions outside the anchor's class block: draw in
        # [0, n - count) and jump over the block [start, start + count).
        r = uniform_int(n - count)
        negative = tf.where(r < start, r, r + count)
        is_positive = tf.range(a) < p
        partners = tf.gather(self.order, tf.where(is_positive, positive, negative))
        return tf.reshape(tf.stack([anchors, partners], axis=1), [2 * a])


def domain_probabilities(sizes, policy, weights=None):
    """Per-batch domain probabilities for a policy (``naive`` has none: it mixes domains)."""
    sizes = np.asarray(sizes, np.float64)
    if policy == "domain_specific":
        p = sizes
    elif policy == "domain_balanced":
        p = np.ones_like(sizes)
    elif policy == "weighted":
        if weights is None or len(weights) != len(sizes):
            raise ValueError(
                f"policy 'weighted' needs one weight per domain ({len(sizes)}), got {weights!r}")
        # Weights multiply the image-count probability: [1, 10] means "the second domain's
        # images are drawn 10× as often as their share", as 000 §5.3 does for CUB next to ImageNet.
        p = sizes * np.asarray(weights, np.float64)
    else:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {POLICIES}")
    if np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"domain weights must be non-negative with a positive sum, got {p}")
    return p / p.sum()


def batch_indices(labels_per_domain: Sequence[np.ndarray], classes_per_batch: int,
                  images_per_class: int, policy: str = "domain_specific",
                  weights: Optional[Sequence[float]] = None, seed: int = 0,
                  start_step: int = 0, schedule=None) -> tf.data.Dataset:
    """An endless dataset of batches ``(domain [B] int32, index [B] int64)``, B = c·k.

    Args:
      labels_per_domain: the training labels of each domain's split (a list, one per domain).
      classes_per_batch: c, classes per batch.
      images_per_class: k, images per class.
      policy: one of ``POLICIES``; irrelevant for a single domain.
      weights: per-domain weights for ``policy="weighted"``.
      seed: the recipe seed; the stream is a pure function of it.
      start_step: the first batch's number: the stream from ``start_step`` on is exactly the
        tail of the stream from 0 (a resumed run continues where it stopped).
      schedule: ``(domains, first_step)``: batch ``first_step + i`` comes from domain
        ``domains[i]`` instead of a drawn one (a dynamic policy decided the domains); the
        images of a batch are the ones the other policies draw for that step and domain. The
        stream ends with the schedule.

    Returns:
      ``tf.data.Dataset`` of ``(domain, index)`` pairs of shape ``[B]``.
    """
    if classes_per_batch < 1 or images_per_class < 1:
        raise ValueError("classes_per_batch and images_per_class must be >= 1")
    if policy not in POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; expected one of {POLICIES}")
    c, k = classes_per_batch, images_per_class
    base = tf.constant([seed, 0x5EED], tf.int64)

    if policy == "naive" and len(labels_per_domain) > 1:
        # One class index over the union: a class is (domain, label); rows are encoded as
        # domain * stride + row so one gather yields both.
        stride = max(len(l) for l in labels_per_domain)
        keys, rows = [], []
        offset = 0
        for d, labels in enumerate(labels_per_domain):
            labels = np.asarray(labels, np.int64)
            _, local = np.unique(labels, return_inverse=True)
            keys.append(local + offset)
            offset += local.max() + 1
            rows.append(d * stride + np.arange(len(labels)))
        union = _ClassIndex(np.concatenate(keys))
        rows = tf.constant(np.concatenate(rows), tf.int64)

        def sample(step):
            code = tf.gather(rows, union.sample(base + [0, step], c, k))
            return tf.cast(code // stride, tf.int32), code % stride
    else:
        indexes = [_ClassIndex(l) for l in labels_per_domain]
        logp = tf.constant(np.log(domain_probabilities(
            [len(l) for l in labels_per_domain], policy, weights) + 1e-30), tf.float32)
        if schedule is not None:
            domains, first = np.asarray(schedule[0], np.int32).reshape(-1), int(schedule[1])
            if len(domains) and (domains.min() < 0 or domains.max() >= len(indexes)):
                raise ValueError(f"schedule names domains outside [0, {len(indexes)})")
            planned = tf.constant(domains)

        def sample(step):
            seeds = tf.random.experimental.stateless_split(base + [0, step], 2)
            if schedule is not None:
                domain = tf.gather(planned, step - first)
            elif len(indexes) == 1:
                domain = tf.constant(0, tf.int32)
            else:
                domain = tf.cast(tf.random.stateless_categorical(
                    logp[None, :], 1, seeds[0])[0, 0], tf.int32)
            # Only the chosen domain's sampler runs (switch_case), whatever the domain count.
            index = tf.switch_case(
                domain, [lambda i=i: i.sample(seeds[1], c, k) for i in indexes])
            index.set_shape([c * k])
            return tf.fill([c * k], domain), index

    if schedule is not None:
        first, n = int(schedule[1]), len(schedule[0])
        if not first <= int(start_step) <= first + n:
            raise ValueError(f"start_step {start_step} is outside the schedule's steps "
                             f"[{first}, {first + n}]")
        steps = tf.data.Dataset.range(int(start_step), first + n)
    else:
        steps = tf.data.Dataset.counter(int(start_step))
    return steps.map(sample)


def _as_count(name, value):
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def pair_batch_indices(labels: np.ndarray, num_anchors: int = 32, num_positive: int = 16,
                       seed: int = 0, start_step: int = 0) -> tf.data.Dataset:
    """An endless dataset of pair batches ``(domain [B] int32, index [B] int64)``, B = 2·a.

    Paper 002 (ABE, §4): "randomly sampling 32 images and then positive pairs for first 16
    images and negative pairs for next 16 images, thus making the mini-batch of size 64". Per
    batch (a = ``num_anchors``, p = ``num_positive``):

    * a distinct anchor rows, uniform over the split's rows (without replacement);
    * anchors ``0..p-1`` get a positive partner: a uniform row of the same label other than the
      anchor's row. If the anchor's class has a single image, the partner is the anchor row
      itself (a duplicate pair rather than an error);
    * anchors ``p..a-1`` get a negative partner: a uniform row among the rows of other labels.

    The batch is interleaved ``[a0, p0, a1, p1, ...]``, so the pair of anchor i sits at
    positions ``2i, 2i+1``: every contiguous even-sized slice (one replica's share of the global
    batch under ``MirroredStrategy``) holds whole pairs. Single domain only: ``domain`` is all
    zeros.

    Args:
      labels: the training labels of the split (``[N]`` ints, any values).
      num_anchors: a, anchors per batch (``1 <= a <= N``).
      num_positive: p, anchors with a positive partner (``0 <= p <= a``).
      seed: the recipe seed; the stream is a pure function of it (and of the step).
      start_step: the first batch's number (see :func:`batch_indices`).

    Returns:
      ``tf.data.Dataset`` of ``(domain, index)`` pairs of shape ``[2 * num_anchors]``.

    Raises:
      ValueError: on an empty split, bad counts, ``num_anchors > N``, or negatives requested
        (``num_positive < num_anchors``) from a split with a single class.
    """
    a = _as_count("num_anchors", num_anchors)
    p = _as_count("num_positive", num_positive)
    if a < 1:
        raise ValueError(f"num_anchors must be >= 1, got {a}")
    if not 0 <= p <= a:
        raise ValueError(f"num_positive must be in [0, num_anchors={a}], got {p}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    index = _PairIndex(labels)
    if a > index.num_rows:
        raise ValueError(f"num_anchors={a} distinct anchors need at least {a} rows; the split "
                         f"has {index.num_rows}")
    if p < a and index.num_classes < 2:
        raise ValueError("negative pairs need a split with at least 2 classes; this one has "
                         f"{index.num_classes}")
    base = tf.constant([seed, 0x9A1125], tf.int64)

    def sample(step):
        rows = index.sample_pairs(base + [0, step], a, p)
        return tf.zeros([2 * a], tf.int32), rows

    return tf.data.Dataset.counter(int(start_step)).map(sample)


# ------------------------------------------------------------------------------------ samplers
# A sampler is a small object: ``sampler(labels_per_domain, seed, start_step)`` is the endless
# ``(domain [B], index [B])`` stream of its batches, ``batch_size`` their static size. Each keeps
# the augmentation seeds its stream had before samplers were objects (``augment_salt``), so a
# recorded run replays.


@dataclasses.dataclass(frozen=True)
class ClassBalanced:
    """c classes × k images per batch (:func:`batch_indices`), with a multi-domain ``policy``
    (``POLICIES``; ``weights`` for ``"weighted"``)."""

    classes_per_batch: int
    images_per_class: int
    policy: str = "domain_specific"
    weights: Optional[Sequence[float]] = None

    augment_salt = 0xA06
    labelled = True

    def __post_init__(self):
        if self.classes_per_batch < 1 or self.images_per_class < 1:
            raise ValueError("classes_per_batch and images_per_class must be >= 1")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown sampling policy {self.policy!r}; expected one of "
                             f"{POLICIES}")

    @property
    def batch_size(self):
        return int(self.classes_per_batch) * int(self.images_per_class)

    def __call__(self, labels_per_domain, seed=0, start_step=0):
        return batch_indices(labels_per_domain, int(self.classes_per_batch),
                             int(self.images_per_class), policy=self.policy,
                             weights=self.weights, seed=seed, start_step=start_step)


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """c×k batches from the domains a dynamic policy scheduled: batch ``first_step + i`` from
    domain ``domains[i]`` (``batch_indices(schedule=...)``), each batch's images drawn as
    :class:`ClassBalanced` draws them for that step and domain. The stream ends with the
    schedule; a policy builds the next one (``tfembed.universal.dynamic``)."""

    classes_per_batch: int
    images_per_class: int
    domains: tuple
    first_step: int = 0

    augment_salt = ClassBalanced.augment_salt
    labelled = True

    @property
    def batch_size(self):
        return int(self.classes_per_batch) * int(self.images_per_class)

    def __call__(self, labels_per_domain, seed=0, start_step=0):
        return batch_indices(labels_per_domain, int(self.classes_per_batch),
                             int(self.images_per_class), seed=seed, start_step=start_step,
                             schedule=(self.domains, self.first_step))


def _one_domain(sampler, labels_per_domain):
    if len(labels_per_domain) != 1:
        raise ValueError(f"{sampler} needs exactly one split, got {len(labels_per_domain)}")
    return labels_per_domain[0]


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Paper 002's pair batches (:func:`pair_batch_indices`): ``num_anchors`` anchors, the first
    ``num_positive`` with a positive partner, the rest with a negative one; batch 2·a; one
    split."""

    num_anchors: int = 32
    num_positive: int = 16

    augment_salt = 0xA06
    labelled = True

    @property
    def batch_size(self):
        return 2 * _as_count("num_anchors", self.num_anchors)

    def __call__(self, labels_per_domain, seed=0, start_step=0):
        return pair_batch_indices(_one_domain(self, labels_per_domain), self.num_anchors,
                                  self.num_positive, seed=seed, start_step=start_step)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniformly shuffled images without their labels (an unlabelled stream: the batch
    composition must not use the hidden labels). Element n is image ``π_e(n mod N)`` of pass
    ``e = n // N``, with ``π_e`` a stateless permutation seeded by ``(seed, e)``: every image once
    per pass; batches run across pass boundaries, so a split smaller than a batch works (with
    repeats). One split; the stream's labels are -1."""

    batch_size: int

    augment_salt = 0x51A
    labelled = False

    def __call__(self, labels_per_domain, seed=0, start_step=0):
        n = len(_one_domain(self, labels_per_domain))
        if n == 0:
            raise ValueError("the unlabelled split is empty")
        b = int(self.batch_size)
        perm_seed = tf.constant([seed, 0x5A5], tf.int64)

        def element(number):
            pass_, position = number // n, number % n
            index = tf.random.experimental.index_shuffle(position, perm_seed + [0, pass_], n - 1)
            return tf.constant(0, tf.int32), tf.cast(index, tf.int64)

        ds = tf.data.Dataset.counter(int(start_step) * b).map(element)
        return ds.batch(b, drop_remainder=True)
