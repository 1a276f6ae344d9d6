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
``preprocess.py`` turns those into pixels.
"""

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
                  weights: Optional[Sequence[float]] = None, seed: int = 0) -> tf.data.Dataset:
    """An endless dataset of batches ``(domain [B] int32, index [B] int64)``, B = c·k.

    Args:
      labels_per_domain: the training labels of each domain's split (a list, one per domain).
      classes_per_batch: c, classes per batch.
      images_per_class: k, images per class.
      policy: one of ``POLICIES``; irrelevant for a single domain.
      weights: per-domain weights for ``policy="weighted"``.
      seed: the recipe seed; the stream is a pure function of it.

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

        def sample(step):
            seeds = tf.random.experimental.stateless_split(base + [0, step], 2)
            if len(indexes) == 1:
                domain = tf.constant(0, tf.int32)
            else:
                domain = tf.cast(tf.random.stateless_categorical(
                    logp[None, :], 1, seeds[0])[0, 0], tf.int32)
            # Only the chosen domain's sampler runs (switch_case), whatever the domain count.
            index = tf.switch_case(
                domain, [lambda i=i: i.sample(seeds[1], c, k) for i in indexes])
            index.set_shape([c * k])
            return tf.fill([c * k], domain), index

    return tf.data.Dataset.counter().map(sample)
