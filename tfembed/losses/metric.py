"""Metric-learning losses on ``(labels, embeddings)``.

Every loss is a pure function ``fn(labels, embeddings, **hyper_parameters) -> scalar`` plus, where
it has no trainable state, a thin ``keras.losses.Loss`` class (``model.compile(loss=...)`` passes
``y_true`` = labels ``[batch]`` and ``y_pred`` = embeddings ``[batch, dim]``).  Proxy-NCA and
ArcFace own a ``[num_classes, dim]`` weight, which a ``Loss`` cannot train (the optimizer never
sees it), so they come as ``keras.layers.Layer`` heads whose ``call`` returns the loss.

Conventions shared by all functions:

- Labels are compared by equality only (Keras hands them over as float32); they are flattened to
  ``[batch]``.  Proxy-NCA and ArcFace need class ids in ``[0, num_classes)``.
- Embeddings are cast to float32; distances are Euclidean on the embeddings as given, through
  ``tfembed.ops`` so that identical rows keep finite gradients.
- All work is vectorised over the batch, and the batch size may be unknown (``None``).
- A batch without the pairs a loss needs (no positive pair, a single class...) gives 0, never NaN.
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
    "triplet_semihard_loss",
    "multi_similarity_loss",
    "contrastive_loss",
    "contrastive_pairs_loss",
    "margin_loss",
    "triplet_distance_weighted_loss",
    "TripletDistanceWeightedLoss",
    "distance_weighted_negatives",
    "proxy_nca_loss",
    "binomial_deviance_loss",
    "arcface_loss",
    "TripletSemiHardLoss",
    "MultiSimilarityLoss",
    "ContrastiveLoss",
    "ContrastivePairsLoss",
    "MarginLoss",
    "BinomialDevianceLoss",
    "ProxyNCAHead",
    "ArcFaceHead",
    "triplet_hard_loss",
    "TripletHardLoss",
    "triplet_batch_hard_loss",
    "TripletBatchHardLoss",
]

_INF = float("inf")


def _flat_labels(labels):
    return tf.reshape(tf.convert_to_tensor(labels), [-1])


def _pair_masks(labels):
    """``(positive, negative)`` ``[B, B]`` masks: same label off the diagonal / different label."""
    same = ops.same_label_mask(labels)
    positive = tf.logical_and(same, ops.off_diagonal_mask(tf.shape(labels)[0]))
    return positive, tf.logical_not(same)


def _count(mask):
    return tf.reduce_sum(tf.cast(mask, tf.float32))


def _cosine_similarities(embeddings):
    # l2_normalize divides by max(norm, eps), so even an all-zero row has a finite gradient.
    x = tf.math.l2_normalize(ops.as_float32(embeddings), axis=1)
    return tf.matmul(x, x, transpose_b=True)


# --------------------------------------------------------------------------------------------
# Triplet loss with semi-hard negative mining
# --------------------------------------------------------------------------------------------


def triplet_semihard_loss(labels, embeddings, margin=1.0):
    """Triplet loss with online semi-hard negative mining (Schroff et al., 2015).

    For every ordered positive pair ``(a, p)``, ``a != p``, the negative is the closest ``n`` with
    ``d(a, n) > d(a, p)`` (strictly); when no negative is that far, the farthest negative of
    ``a``.  The loss is the mean over positive pairs of ``max(d(a, p) - d(a, n) + margin, 0)``
    with Euclidean (not squared) distances.  Pairs whose anchor has no negative in the batch
    (a batch of a single class) have no triplet and are left out of the mean; with no triplet
    at all the loss is 0.

    Args:
      labels: ``[batch]`` class labels (any dtype; compared by equality).
      embeddings: ``[batch, dim]`` float embeddings.
      margin: the triplet margin.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.constant([[0.0], [1.0], [0.5], [2.0]])
    >>> float(triplet_semihard_loss(labels, embeddings, margin=1.0))
    0.875
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    dist = ops.pairwise_distances(embeddings)

    # Mining is a selection, not part of the function being differentiated.
    d_sel = tf.stop_gradient(dist)
    # Each anchor's negative distances in ascending order, non-negatives (inf) at the end: the
    # semi-hard negative of (a, p) is then one binary search away, O(B^2 log B) time and O(B^2)
    # memory instead of a [B, B, B] comparison tensor.
    neg_dist = tf.where(negative, d_sel, _INF)
    order = tf.argsort(neg_dist, axis=1, stable=True)
    sorted_neg = tf.gather(neg_dist, order, batch_dims=1)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1, keepdims=True)
    # side="right" gives the first position whose distance is strictly greater than d(a, p).
    first_farther = tf.searchsorted(sorted_neg, d_sel, side="right")
    rank = tf.where(first_farther < num_neg, first_farther, num_neg - 1)
    rank = tf.maximum(rank, 0)  # anchors without negatives; their pairs are masked out below
    neg_index = tf.gather(order, rank, batch_dims=1)
    d_an = tf.gather(dist, neg_index, batch_dims=1)

    valid = tf.logical_and(positive, num_neg > 0)
    hinge = tf.maximum(dist - d_an + margin, 0.0)
    total = tf.reduce_sum(tf.where(valid, hinge, 0.0))
    return tf.math.divide_no_nan(total, _count(valid))


def triplet_hard_loss(labels, embeddings, margin=1.0):
    """Triplet loss with hard negative mining in the batch (001 §5.1, after Simo-Serra et al.).

    For every ordered positive pair ``(a, p)``, ``a != p``, the negative is the closest ``n`` to
    ``a`` with a different label (the hardest); the loss is the mean over positive pairs of
    ``max(d(a, p) - d(a, n) + margin, 0)`` with Euclidean distances. Pairs whose anchor has no
    negative in the batch are left out; with no triplet at all the loss is 0.

    Args:
      labels: ``[batch]`` class labels (any dtype; compared by equality).
      embeddings: ``[batch, dim]`` float embeddings.
      margin: the triplet margin.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.constant([[0.0], [1.0], [0.5], [2.0]])
    >>> float(triplet_hard_loss(labels, embeddings, margin=1.0))
    1.625
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    dist = ops.pairwise_distances(embeddings)
    # The hardest negative's distance (its gradient reaches that negative only); anchors with no
    # negative get +inf, i.e. a zero hinge, and are masked out below. reduce_min rather than an
    # argmin keeps empty batches valid.
    d_an = tf.reduce_min(tf.where(negative, dist, _INF), axis=1, keepdims=True)
    has_negative = tf.reduce_any(negative, axis=1, keepdims=True)
    valid = tf.logical_and(positive, has_negative)
    hinge = tf.maximum(dist - d_an + margin, 0.0)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, hinge, 0.0)), _count(valid))


def triplet_batch_hard_loss(labels, embeddings, margin=0.0):
    """Batch-hard triplet loss (Hermans et al., 2017): one triplet per anchor.

    For every anchor ``a``, the hardest positive (the farthest ``p != a`` with its label) and the
    hardest negative (the closest ``n`` with another label); the loss is the mean over anchors of
    ``max(d(a, p) - d(a, n) + margin, 0)`` with Euclidean (not squared) distances. This is the
    triplet loss of 001's public code (yulu0724/EmbeddingDistillation, ``losses/triplet.py``:
    ``TripletLoss(margin=0)``, which the training script builds without a margin), hence the
    default margin 0. Anchors without a positive or without a negative in the batch are left out
    of the mean; with no triplet at all the loss is 0. Unlike :func:`triplet_hard_loss` (every
    positive pair with its hardest negative), each anchor contributes one term.

    Distances go through ``tfembed.ops`` (a root of 0, with a zero gradient, for identical
    rows); the authors' code takes ``sqrt(max(d², 1e-12))``, which differs by at most 1e-6.

    Args:
      labels: ``[batch]`` class labels (any dtype; compared by equality).
      embeddings: ``[batch, dim]`` float embeddings.
      margin: the triplet margin.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.constant([[0.0], [1.0], [0.5], [2.0]])
    >>> float(triplet_batch_hard_loss(labels, embeddings))  # (0.5 + 0.5 + 1.0 + 0.5) / 4
    0.625
    >>> # The farthest positive counts; anchor 3 has no positive and is left out: (1 + 1 + 2) / 3.
    >>> labels = tf.constant([0, 0, 0, 1])
    >>> embeddings = tf.constant([[0.0], [1.0], [3.0], [2.0]])
    >>> round(float(triplet_batch_hard_loss(labels, embeddings)), 4)
    1.3333
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    dist = ops.pairwise_distances(embeddings)
    # The mining is the max / min itself: each term's gradient reaches its anchor and the one
    # positive and negative picked (shared between them on exact ties, as reduce_max does).
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    # Rows left out get 0 in place of the ±inf fill, so no inf reaches the hinge.
    d_ap = tf.where(valid, tf.reduce_max(tf.where(positive, dist, -_INF), axis=1), 0.0)
    d_an = tf.where(valid, tf.reduce_min(tf.where(negative, dist, _INF), axis=1), 0.0)
    hinge = tf.maximum(d_ap - d_an + margin, 0.0)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, hinge, 0.0)), _count(valid))


# --------------------------------------------------------------------------------------------
# Multi-similarity loss
# --------------------------------------------------------------------------------------------


def _log1p_sum_exp(logits, mask):
    """``log(1 + sum_{mask} exp(logits))`` per row, without overflow for large logits."""
    masked = tf.where(mask, logits, -_INF)
    # The explicit 0 logit is the "1 +"; it also keeps every row's maximum finite.
    zeros = tf.zeros_like(masked[:, :1])
    return tf.reduce_logsumexp(tf.concat([zeros, masked], axis=1), axis=1)


def multi_similarity_loss(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
    """Multi-similarity loss with its pair mining (Wang et al., CVPR 2019).

    ``S`` is the cosine similarity of the L2-normalised embeddings.  For anchor ``i`` with
    positives ``P_i`` (same label, ``j != i``) and negatives ``N_i``, a negative ``j`` is kept if
    ``S_ij + epsilon > min_{k in P_i} S_ik`` and a positive ``j`` if
    ``S_ij - epsilon < max_{k in N_i} S_ik``.  Then

        loss_i = 1/alpha * log(1 + sum_{kept pos} exp(-alpha (S_ik - base)))
               + 1/beta  * log(1 + sum_{kept neg} exp( beta (S_ik - base)))

    An anchor contributes 0 when either kept set is empty (as in the authors' code), and the sum
    is divided by the batch size.  Both terms are evaluated as log-sum-exp, so ``beta = 50``
    cannot overflow float32.

    Args:
      labels: ``[batch]`` class labels (compared by equality).
      embeddings: ``[batch, dim]`` float embeddings (normalised inside).
      alpha: scale of the positive term.
      beta: scale of the negative term.
      base: the similarity margin ``lambda`` of the paper.
      epsilon: the mining margin.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.random.normal([4, 8])
    >>> multi_similarity_loss(labels, embeddings).shape
    TensorShape([])
    """
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    sim = _cosine_similarities(embeddings)

    s = tf.stop_gradient(sim)
    min_pos = tf.reduce_min(tf.where(positive, s, _INF), axis=1, keepdims=True)
    max_neg = tf.reduce_max(tf.where(negative, s, -_INF), axis=1, keepdims=True)
    keep_neg = tf.logical_and(negative, s + epsilon > min_pos)
    keep_pos = tf.logical_and(positive, s - epsilon < max_neg)

    pos_term = _log1p_sum_exp(-alpha * (sim - base), keep_pos) / alpha
    neg_term = _log1p_sum_exp(beta * (sim - base), keep_neg) / beta
    mined = tf.logical_and(tf.reduce_any(keep_pos, axis=1), tf.reduce_any(keep_neg, axis=1))
    per_anchor = tf.where(mined, pos_term + neg_term, 0.0)
    batch_size = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_anchor), batch_size)


# --------------------------------------------------------------------------------------------
# Contrastive loss
# --------------------------------------------------------------------------------------------


def contrastive_loss(labels, embeddings, margin=1.0):
    """Contrastive loss in the form of ABE (Kim et al., ECCV 2018), Eq. 10.

    Mean over ordered pairs ``i != j`` of ``y * D^2 + (1 - y) * max(0, margin - D^2)`` with
    ``D^2`` the squared Euclidean distance and ``y = 1`` for pairs with the same label.  Only
    squared distances appear, so no square root is taken at all.

    Args:
      labels: ``[batch]`` class labels (compared by equality).
      embeddings: ``[batch, dim]`` float embeddings.
      margin: margin on the squared distance of negative pairs.

    Returns:
      A float32 scalar (0 for a batch of one).

    Example:

    >>> labels = tf.constant([0, 0, 1])
    >>> embeddings = tf.constant([[0.0], [1.0], [0.5]])
    >>> round(float(contrastive_loss(labels, embeddings, margin=1.0)), 4)
    0.8333
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    d2 = ops.pairwise_squared_distances(embeddings)
    total = tf.reduce_sum(tf.where(positive, d2, 0.0)) + tf.reduce_sum(
        tf.where(negative, tf.nn.relu(margin - d2), 0.0)
    )
    n = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.math.divide_no_nan(total, n * (n - 1.0))


def contrastive_pairs_loss(labels, embeddings, margin=1.0):
    """Contrastive loss on the sampled pairs of a pair batch: rows ``(2i, 2i+1)`` form pair i.

    The siamese form of ABE's Eq. 10 that goes with its pair sampling (002 §4: 32 images, a
    positive partner for the first 16 and a negative one for the next 16; the data pipeline's
    ``training_batches(pairs=...)`` interleaves them ``[a0, p0, a1, p1, ...]``): mean over the
    pairs of ``y * D^2 + (1 - y) * max(0, margin - D^2)``, ``y = 1`` when the pair shares its
    label. Unlike :func:`contrastive_loss` (all ordered pairs of the batch, where the ~B²
    negatives drown the few positives), every sampled pair weighs the same. Under
    MirroredStrategy each replica's slice holds whole pairs, and the all-gathered batch keeps the
    order.

    Args:
      labels: ``[batch]`` labels (an odd last row has no partner and is ignored).
      embeddings: ``[batch, dim]`` float embeddings, pair i in rows 2i and 2i + 1.
      margin: margin on the squared distance of negative pairs.

    Returns:
      A float32 scalar (0 for an empty batch).

    Example:

    >>> labels = tf.constant([0, 0, 1, 2])
    >>> embeddings = tf.constant([[0.0], [0.5], [0.0], [0.6]])
    >>> round(float(contrastive_pairs_loss(labels, embeddings, margin=1.0)), 4)  # (.25 + .64)/2
    0.445
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    # An odd last row has no partner: it is left out.
    n = (tf.shape(labels)[0] // 2) * 2
    embeddings, labels = embeddings[:n], labels[:n]
    first, second = embeddings[0::2], embeddings[1::2]
    d2 = tf.reduce_sum(tf.square(first - second), axis=-1)
    same = tf.equal(labels[0::2], labels[1::2])
    per_pair = tf.where(same, d2, tf.nn.relu(margin - d2))
    return tf.math.divide_no_nan(tf.reduce_sum(per_pair), tf.cast(tf.size(per_pair), tf.float32))


# --------------------------------------------------------------------------------------------
# Margin loss with distance-weighted sampling
# --------------------------------------------------------------------------------------------


def _distance_weighted_logits(negative, dist, dim, cutoff, nonzero_loss_cutoff):
    """Per-anchor log sampling weights ``[B, B]`` of distance-weighted sampling.

    ``log q(d)^-1 = (2 - n) log d - (n - 3)/2 * log(1 - d^2 / 4)`` on ``d`` clipped below at
    ``cutoff``; only negatives closer than ``nonzero_loss_cutoff`` may be drawn (the others have a
    zero loss anyway) unless the anchor has none, then all its negatives are drawn uniformly.
    Rows without any negative are uniform over the batch only to keep the sampler well defined;
    the loss drops their pairs.
    """
    d = tf.maximum(tf.stop_gradient(dist), cutoff)
    # 1 - d^2/4 reaches 0 at d = 2 (antipodal unit vectors) and is negative beyond it for
    # non-normalised inputs; the floor keeps the log finite there.
    log_inv_q = (2.0 - dim) * tf.math.log(d) - 0.5 * (dim - 3.0) * tf.math.log(
        tf.maximum(1.0 - 0.25 * tf.square(d), 1e-8)
    )
    near = tf.logical_and(negative, d < nonzero_loss_cutoff)
    logits = tf.where(near, log_inv_q, -_INF)
    uniform_negatives = tf.where(negative, 0.0, -_INF)
    logits = tf.where(tf.reduce_any(near, axis=1, keepdims=True), logits, uniform_negatives)
    return tf.where(tf.reduce_any(negative, axis=1, keepdims=True), logits, 0.0)


def _sample_negatives(logits, seed):
    # One independent draw per (anchor, column): column p is the negative of the pair (a, p).
    n = tf.shape(logits)[0]
    # A never-drawn extra class keeps the op valid for an empty batch (0 classes is an error);
    # every real row has a finite logit, so the padding index is never returned.
    logits = tf.pad(logits, [[0, 0], [0, 1]], constant_values=-_INF)
    if seed is None or isinstance(seed, int):
        # Stateful op: reproducible under keras.utils.set_random_seed / tf.random.set_seed and
        # different at every call, which is what a training loss wants.
        return tf.random.categorical(logits, n, dtype=tf.int32, seed=seed)
    return tf.random.stateless_categorical(logits, n, seed=seed, dtype=tf.int32)


def _embedding_dim(embeddings):
    dim = embeddings.shape[-1]
    if dim is None:
        return tf.cast(tf.shape(embeddings)[-1], tf.float32)
    return float(dim)


def distance_weighted_negatives(
    labels, embeddings, cutoff=0.5, nonzero_loss_cutoff=1.4, seed=None
):
    """Distance-weighted negative sampling (Wu et al., ICCV 2017), one negative per pair.

    Returns a ``[batch, batch]`` int32 matrix whose entry ``[a, p]`` is the negative drawn for
    the pair ``(a, p)``, with probability proportional to ``q(d(a, n))^-1``,
    ``q(d) = d^(n-2) (1 - d^2/4)^((n-3)/2)`` the density of distances between uniform points on
    the unit sphere in ``n = dim`` dimensions.  Distances are clipped below at ``cutoff`` (which
    bounds the weights, the paper's ``lambda``) and negatives at ``nonzero_loss_cutoff`` or
    farther are never drawn unless the anchor has no other negative (then its negatives are
    drawn uniformly).  Entries of pairs that are not positive pairs, or whose anchor has no
    negative, are arbitrary.  Positives are never drawn.  ``margin_loss`` uses exactly this
    sampler, so the same ``seed`` gives the same negatives.

    Args:
      labels: ``[batch]`` class labels (compared by equality).
      embeddings: ``[batch, dim]`` embeddings, meant to be L2-normalised.
      cutoff: lower clip of the distance in the weights.
      nonzero_loss_cutoff: negatives at this distance or farther get weight 0.
      seed: ``None`` or a Python int: stateful sampling (an int is the op-level seed, combined
        with the global seed); a shape-``[2]`` integer tensor: ``tf.random.stateless_categorical``.
        Under XLA (``jit_compile=True``) the stateful sampler ignores seeds and the stateless
        one draws different (still seed-determined) numbers than without XLA.

    Returns:
      ``[batch, batch]`` int32 negative indices.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.math.l2_normalize(tf.random.normal([4, 8]), axis=1)
    >>> distance_weighted_negatives(labels, embeddings, seed=[1, 2]).shape
    TensorShape([4, 4])
    """
    embeddings = ops.as_float32(embeddings)
    labels = _flat_labels(labels)
    _, negative = _pair_masks(labels)
    dist = ops.pairwise_distances(embeddings)
    logits = _distance_weighted_logits(
        negative, dist, _embedding_dim(embeddings), cutoff, nonzero_loss_cutoff
    )
    return _sample_negatives(logits, seed)


def _distance_weighted_triplets(labels, embeddings, cutoff, nonzero_loss_cutoff, seed):
    """``(d(a, p) [B, B], d(a, n) [B, B], valid [B, B])``: every ordered positive pair with its
    distance-weighted negative; ``valid`` marks positive pairs whose anchor has a negative."""
    embeddings = ops.as_float32(embeddings)
    positive, negative = _pair_masks(labels)
    dist = ops.pairwise_distances(embeddings)
    logits = _distance_weighted_logits(
        negative, dist, _embedding_dim(embeddings), cutoff, nonzero_loss_cutoff
    )
    d_an = tf.gather(dist, _sample_negatives(logits, seed), batch_dims=1)
    valid = tf.logical_and(positive, tf.reduce_any(negative, axis=1, keepdims=True))
    return dist, d_an, valid


def margin_loss(
    labels,
    embeddings,
    margin=0.2,
    beta=1.2,
    nu=0.0,
    cutoff=0.5,
    nonzero_loss_cutoff=1.4,
    seed=None,
):
    """Margin loss with distance-weighted sampling (Wu et al., "Sampling Matters", ICCV 2017).

    Every ordered positive pair ``(a, p)`` gets one negative ``n`` from
    ``distance_weighted_negatives``; the triplet's loss is

        relu(d(a, p) - beta + margin) + relu(beta - d(a, n) + margin)

    with Euclidean distances.  As in the authors' implementation the sum (plus
    ``nu * sum(beta)`` over triplets, the beta regulariser) is divided by the number of
    *non-zero* terms (positive and negative parts counted separately), not by the number of
    triplets; with no non-zero term the loss is 0.  Pairs whose anchor has no negative are left
    out.

    Args:
      labels: ``[batch]`` class labels.  Integer class ids in ``[0, C)`` when ``beta`` is a
        per-class vector.
      embeddings: ``[batch, dim]`` embeddings, meant to be L2-normalised.
      margin: the margin ``alpha``.
      beta: the boundary ``beta``: a scalar, or a ``[C]`` tensor/variable of learned per-class
        boundaries indexed by the anchor's label.
      nu: weight of the beta regulariser.
      cutoff: see ``distance_weighted_negatives``.
      nonzero_loss_cutoff: see ``distance_weighted_negatives``.
      seed: see ``distance_weighted_negatives``.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.math.l2_normalize(tf.random.normal([4, 8]), axis=1)
    >>> margin_loss(labels, embeddings, seed=[1, 2]).shape
    TensorShape([])
    """
    labels = _flat_labels(labels)
    dist, d_an, valid = _distance_weighted_triplets(
        labels, embeddings, cutoff, nonzero_loss_cutoff, seed
    )

    beta = ops.as_float32(beta)
    if beta.shape.rank:
        beta = tf.gather(beta, tf.cast(labels, tf.int32))[:, None]
    pos_loss = tf.nn.relu(dist - beta + margin)
    neg_loss = tf.nn.relu(beta - d_an + margin)
    total = tf.reduce_sum(tf.where(valid, pos_loss + neg_loss + nu * beta, 0.0))
    nonzero = _count(tf.logical_and(valid, pos_loss > 0.0)) + _count(
        tf.logical_and(valid, neg_loss > 0.0)
    )
    return tf.math.divide_no_nan(total, nonzero)


def triplet_distance_weighted_loss(labels, embeddings, margin=0.2, cutoff=0.5,
                                   nonzero_loss_cutoff=1.4, seed=None):
    """Triplet loss on distance-weighted negatives (DM²'s L_DML, ``003_*`` §4.2).

    Every ordered positive pair ``(a, p)`` gets one negative ``n`` from
    ``distance_weighted_negatives`` (Wu et al. 2017); the loss is the mean over those triplets of
    ``relu(d(a, p) - d(a, n) + margin)`` with Euclidean distances (the triplet form of the
    sampling, where ``margin_loss`` is its margin form). Pairs whose anchor has no negative are
    left out; with no triplet the loss is 0.

    Args:
      labels: ``[batch]`` class labels.
      embeddings: ``[batch, dim]`` embeddings, meant to be L2-normalised.
      margin: the triplet margin.
      cutoff, nonzero_loss_cutoff, seed: see ``distance_weighted_negatives``.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> embeddings = tf.math.l2_normalize(tf.random.normal([4, 8]), axis=1)
    >>> triplet_distance_weighted_loss(labels, embeddings, seed=[1, 2]).shape
    TensorShape([])
    """
    dist, d_an, valid = _distance_weighted_triplets(
        _flat_labels(labels), embeddings, cutoff, nonzero_loss_cutoff, seed
    )
    total = tf.reduce_sum(tf.where(valid, tf.nn.relu(dist - d_an + margin), 0.0))
    return tf.math.divide_no_nan(total, _count(valid))


# --------------------------------------------------------------------------------------------
# Proxy-NCA
# --------------------------------------------------------------------------------------------


def _class_ids(labels):
    return tf.cast(_flat_labels(labels), tf.int32)


def _check_num_classes(weights, what):
    num_classes = weights.shape[0]
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"{what} needs at least 2 classes, got {what} of shape {weights.shape}.")


def proxy_nca_loss(labels, embeddings, proxies, scale=1.0):
    """Proxy-NCA loss (Movshovitz-Attias et al., "No Fuss Distance Metric Learning", 2017).

    With embeddings and proxies L2-normalised and ``d`` the squared Euclidean distance,

        loss_i = scale * d(x_i, p_{y_i}) + log sum_{z != y_i} exp(-scale * d(x_i, p_z))

    i.e. ``-log(exp(-d_y) / sum_{z != y} exp(-d_z))`` (the true class is *not* in the
    denominator), averaged over the batch.  ``scale = 1`` is the paper's formula; larger values
    (e.g. 9, i.e. both sides scaled to norm 3) sharpen the softmax and are common in practice.

    Args:
      labels: ``[batch]`` class ids in ``[0, C)``.
      embeddings: ``[batch, dim]`` float embeddings.
      proxies: ``[C, dim]`` proxies (``C >= 2``), typically a trainable weight
        (see ``ProxyNCAHead``).
      scale: multiplies the squared distances.

    Returns:
      A float32 scalar.

    Example:

    >>> proxies = tf.random.normal([3, 8])
    >>> proxy_nca_loss(tf.constant([0, 2]), tf.random.normal([2, 8]), proxies).shape
    TensorShape([])
    """
    proxies = ops.as_float32(proxies)
    _check_num_classes(proxies, "proxies")
    labels = _class_ids(labels)
    x = tf.math.l2_normalize(ops.as_float32(embeddings), axis=1)
    p = tf.math.l2_normalize(proxies, axis=1)
    logits = -scale * ops.pairwise_squared_distances(x, p)
    is_target = tf.equal(labels[:, None], tf.range(tf.shape(p)[0])[None, :])
    target = tf.gather(logits, labels, batch_dims=1)
    others = tf.reduce_logsumexp(tf.where(is_target, -_INF, logits), axis=1)
    per_example = others - target
    n = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), n)


# --------------------------------------------------------------------------------------------
# Binomial deviance
# --------------------------------------------------------------------------------------------


def binomial_deviance_loss(labels, embeddings, alpha=2.0, beta=0.5, cost_negative=25.0):
    """Binomial deviance loss (Yi et al., 2014; in the form of Ustinova & Lempitsky, 2016).

    With ``s_ij`` the cosine similarity, over ordered pairs ``i != j``:

        l_ij = log(1 + exp(-alpha * (s_ij - beta) * m_ij)),  m_ij = 1 (positive) or
                                                               -cost_negative (negative)

    The positive pairs' terms and the negative pairs' terms are averaged separately (weights
    ``1/num_pos`` and ``1/num_neg``, so the many negatives do not drown the few positives) and
    the two means are added; a missing kind of pair contributes 0.

    Args:
      labels: ``[batch]`` class labels (compared by equality).
      embeddings: ``[batch, dim]`` float embeddings (normalised inside).
      alpha: slope.
      beta: similarity offset.
      cost_negative: the asymmetric cost ``C`` of negative pairs.

    Returns:
      A float32 scalar.

    Example:

    >>> labels = tf.constant([0, 0, 1, 1])
    >>> binomial_deviance_loss(labels, tf.random.normal([4, 8])).shape
    TensorShape([])
    """
    labels = _flat_labels(labels)
    positive, negative = _pair_masks(labels)
    sim = _cosine_similarities(embeddings)
    sign = tf.where(positive, 1.0, -float(cost_negative))
    # softplus(z) = log(1 + exp(z)), evaluated without overflow.
    term = tf.math.softplus(-alpha * (sim - beta) * sign)
    pos_mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(positive, term, 0.0)), _count(positive))
    neg_mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(negative, term, 0.0)), _count(negative))
    return pos_mean + neg_mean


# --------------------------------------------------------------------------------------------
# ArcFace
# --------------------------------------------------------------------------------------------


def arcface_loss(labels, embeddings, centers, scale=64.0, margin=0.5):
    """ArcFace, additive angular margin softmax loss (Deng et al., CVPR 2019).

    ``cos theta_j`` is the cosine between the normalised embedding and the normalised class
    center ``W_j``.  The target logit is ``scale * cos(theta_y + margin)`` and the others
    ``scale * cos theta_j``; the loss is the softmax cross-entropy averaged over the batch.
    Where ``theta_y + margin > pi`` the cosine would stop decreasing in ``theta_y``, so there the
    usual replacement ``cos theta_y - sin(pi - margin) * margin`` is used (i.e. the target uses
    ``cos(theta_y + margin)`` if ``cos theta_y > cos(pi - margin)``).

    Args:
      labels: ``[batch]`` class ids in ``[0, C)``.
      embeddings: ``[batch, dim]`` float embeddings.
      centers: ``[C, dim]`` class centers (``C >= 2``), typically a trainable weight
        (see ``ArcFaceHead``).
      scale: the feature scale ``s``.
      margin: the angular margin ``m`` in radians.

    Returns:
      A float32 scalar.

    Example:

    >>> centers = tf.random.normal([3, 8])
    >>> arcface_loss(tf.constant([0, 2]), tf.random.normal([2, 8]), centers).shape
    TensorShape([])
    """
    centers = ops.as_float32(centers)
    _check_num_classes(centers, "centers")
    labels = _class_ids(labels)
    x = tf.math.l2_normalize(ops.as_float32(embeddings), axis=1)
    w = tf.math.l2_normalize(centers, axis=1)
    cos = tf.clip_by_value(tf.matmul(x, w, transpose_b=True), -1.0, 1.0)

    margin = ops.as_float32(margin)
    cos_t = tf.gather(cos, labels, batch_dims=1)
    # sin theta = sqrt(1 - cos^2) has an infinite derivative where an embedding hits its center
    # (cos = 1); safe_sqrt keeps that gradient finite.
    sin_t = ops.safe_sqrt(tf.maximum(1.0 - tf.square(cos_t), 0.0))
    cos_t_plus_m = cos_t * tf.cos(margin) - sin_t * tf.sin(margin)
    threshold = tf.cos(3.141592653589793 - margin)
    fallback = cos_t - tf.sin(3.141592653589793 - margin) * margin
    target = tf.where(cos_t > threshold, cos_t_plus_m, fallback)

    is_target = tf.equal(labels[:, None], tf.range(tf.shape(w)[0])[None, :])
    logits = scale * tf.where(is_target, target[:, None], cos)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    n = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), n)


# --------------------------------------------------------------------------------------------
# Keras Loss classes
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfembed")
class TripletSemiHardLoss(EmbeddingLoss):
    """Loss class of `triplet_semihard_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      margin: the triplet margin.
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    ```python
    model.compile(optimizer="adam", loss=TripletSemiHardLoss(margin=0.2))
    ```
    """

    def __init__(self, margin=1.0, name="triplet_semihard_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(triplet_semihard_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin)


@keras.saving.register_keras_serializable(package="tfembed")
class TripletHardLoss(EmbeddingLoss):
    """Loss class of `triplet_hard_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      margin: the triplet margin.
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=TripletHardLoss(margin=0.2))
    ```
    """

    def __init__(self, margin=1.0, name="triplet_hard_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(triplet_hard_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin)


@keras.saving.register_keras_serializable(package="tfembed")
class TripletBatchHardLoss(EmbeddingLoss):
    """Loss class of `triplet_batch_hard_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      margin: the triplet margin (0, as in 001's public code).
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=TripletBatchHardLoss())
    ```
    """

    def __init__(self, margin=0.0, name="triplet_batch_hard_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(triplet_batch_hard_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin)


@keras.saving.register_keras_serializable(package="tfembed")
class MultiSimilarityLoss(EmbeddingLoss):
    """Loss class of `multi_similarity_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      alpha, beta, base, epsilon: see `multi_similarity_loss`.
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=MultiSimilarityLoss())
    ```
    """

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1,
                 name="multi_similarity_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(multi_similarity_loss, name=name, reduction=reduction, dtype=dtype,
                         alpha=alpha, beta=beta, base=base, epsilon=epsilon)


@keras.saving.register_keras_serializable(package="tfembed")
class ContrastiveLoss(EmbeddingLoss):
    """Loss class of `contrastive_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      margin: margin on the squared distance of negative pairs.
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=ContrastiveLoss(margin=1.0))
    ```
    """

    def __init__(self, margin=1.0, name="contrastive_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(contrastive_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin)


@keras.saving.register_keras_serializable(package="tfembed")
class ContrastivePairsLoss(EmbeddingLoss):
    """Loss class of `contrastive_pairs_loss` (pairs in rows ``2i, 2i+1``).

    Args:
      margin: margin on the squared distance of negative pairs.
      name, reduction, dtype: as for `TripletSemiHardLoss`.
    """

    def __init__(self, margin=1.0, name="contrastive_pairs_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(contrastive_pairs_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin)


@keras.saving.register_keras_serializable(package="tfembed")
class TripletDistanceWeightedLoss(EmbeddingLoss):
    """Loss class of `triplet_distance_weighted_loss`.

    Args:
      margin, cutoff, nonzero_loss_cutoff: as for the function.
      seed: ``None`` or a Python int (as for `MarginLoss`).
      name, reduction, dtype: as for `TripletSemiHardLoss`.
    """

    def __init__(self, margin=0.2, cutoff=0.5, nonzero_loss_cutoff=1.4, seed=None,
                 name="triplet_distance_weighted_loss", reduction="sum_over_batch_size",
                 dtype=None):
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be None or a Python int, got {seed!r}.")
        super().__init__(triplet_distance_weighted_loss, name=name, reduction=reduction,
                         dtype=dtype, margin=margin, cutoff=cutoff,
                         nonzero_loss_cutoff=nonzero_loss_cutoff, seed=seed)


@keras.saving.register_keras_serializable(package="tfembed")
class MarginLoss(EmbeddingLoss):
    """Loss class of `margin_loss` with a fixed scalar ``beta``.

    A learned (per-class) ``beta`` is a trainable weight, which a ``Loss`` cannot own; call
    `margin_loss` with a variable for that.

    Args:
      margin, beta, nu, cutoff, nonzero_loss_cutoff: see `margin_loss`.
      seed: ``None`` or a Python int (op-level seed of the stateful sampler, combined with the
        global seed that ``keras.utils.set_random_seed`` sets). A fixed stateless seed would
        reuse the same random numbers at every step, so it is not offered here.
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=MarginLoss(margin=0.2, beta=1.2))
    ```
    """

    def __init__(self, margin=0.2, beta=1.2, nu=0.0, cutoff=0.5, nonzero_loss_cutoff=1.4,
                 seed=None, name="margin_loss", reduction="sum_over_batch_size", dtype=None):
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"MarginLoss seed must be None or a Python int, got {seed!r}.")
        super().__init__(margin_loss, name=name, reduction=reduction, dtype=dtype,
                         margin=margin, beta=beta, nu=nu, cutoff=cutoff,
                         nonzero_loss_cutoff=nonzero_loss_cutoff, seed=seed)


@keras.saving.register_keras_serializable(package="tfembed")
class BinomialDevianceLoss(EmbeddingLoss):
    """Loss class of `binomial_deviance_loss` (``y_true`` = labels, ``y_pred`` = embeddings).

    Args:
      alpha, beta, cost_negative: see `binomial_deviance_loss`.
      name, reduction, dtype: as for `TripletSemiHardLoss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=BinomialDevianceLoss())
    ```
    """

    def __init__(self, alpha=2.0, beta=0.5, cost_negative=25.0, name="binomial_deviance_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(binomial_deviance_loss, name=name, reduction=reduction, dtype=dtype,
                         alpha=alpha, beta=beta, cost_negative=cost_negative)


# --------------------------------------------------------------------------------------------
# Heads owning class weights
# --------------------------------------------------------------------------------------------


class _ClassWeightHead(keras.layers.Layer):
    """Shared plumbing: a ``[num_classes, dim]`` weight built from the embeddings' shape."""

    _weight_name = None

    def __init__(self, num_classes, initializer, **kwargs):
        # The loss is computed in float32 whatever the global policy, so the weight is neither
        # autocast to float16 nor the loss's softmax run in half precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.initializer = keras.initializers.get(initializer)

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        if dim is None:
            raise ValueError("The embedding dimension must be known to build the class weights.")
        weight = self.add_weight(
            name=self._weight_name,
            shape=(self.num_classes, int(dim)),
            initializer=self.initializer,
            trainable=True,
        )
        setattr(self, self._weight_name, weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfembed")
class ProxyNCAHead(_ClassWeightHead):
    """Owns the ``[num_classes, dim]`` proxies; ``call(embeddings, labels)`` is `proxy_nca_loss`.

    Args:
      num_classes: number of classes ``C`` (labels are ids in ``[0, C)``).
      scale: see `proxy_nca_loss`.
      initializer: initializer of the proxies.
      **kwargs: ``keras.layers.Layer`` arguments.

    Returns (from ``call``):
      The float32 scalar loss, for the trainer to add to its objective.

    Example:

    ```python
    head = ProxyNCAHead(num_classes=10)
    with tf.GradientTape() as tape:
        loss = head(embedder(images), labels)
    grads = tape.gradient(loss, embedder.trainable_variables + head.trainable_variables)
    ```
    """

    _weight_name = "proxies"

    def __init__(self, num_classes, scale=1.0, initializer="random_normal", **kwargs):
        super().__init__(num_classes, initializer, **kwargs)
        self.scale = float(scale)

    def call(self, embeddings, labels):
        return proxy_nca_loss(labels, embeddings, self.proxies, scale=self.scale)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="tfembed")
class ArcFaceHead(_ClassWeightHead):
    """Owns the ``[num_classes, dim]`` centers; ``call(embeddings, labels)`` is `arcface_loss`.

    Args:
      num_classes: number of classes ``C`` (labels are ids in ``[0, C)``).
      scale: the feature scale ``s``.
      margin: the angular margin ``m`` (radians).
      initializer: initializer of the centers.
      **kwargs: ``keras.layers.Layer`` arguments.

    Returns (from ``call``):
      The float32 scalar loss, for the trainer to add to its objective.

    Example:

    ```python
    head = ArcFaceHead(num_classes=10, scale=64.0, margin=0.5)
    loss = head(embeddings, labels)
    ```
    """

    _weight_name = "centers"

    def __init__(self, num_classes, scale=64.0, margin=0.5, initializer="glorot_uniform",
                 **kwargs):
        super().__init__(num_classes, initializer, **kwargs)
        self.scale = float(scale)
        self.margin = float(margin)

    def call(self, embeddings, labels):
        return arcface_loss(labels, embeddings, self.centers, scale=self.scale,
                            margin=self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, margin=self.margin)
        return config
