"""DarkRank: listwise transfer of cross-sample similarities (Chen et al. 2018, ``004_*``).

Every row of a batch is a query once; the other ``B − 1`` rows are its candidate list. A
candidate ``x`` of query ``q`` scores ``S(q, x) = −α ‖q − x‖^β`` (Eq. 4), and a list's scores
define a Plackett–Luce distribution over its permutations (Eq. 1):

    log P(π | S) = Σ_{r=1}^{n} [ S_{π(r)} − log Σ_{m ≥ r} exp S_{π(m)} ].

The inner sums are a *reverse cumulative logsumexp* over the list in rank order, so one
``tf.math.cumulative_logsumexp(..., reverse=True)`` gives the log-likelihood of a whole batch of
permutations with no Python loop over ranks.

- `darkrank_hard_loss`: ListMLE, ``−log P(π_teacher | S_student)`` where ``π_teacher`` sorts the
  candidates by the teacher's scores (Eq. 5, hard), mean over queries. Any batch size, including
  an unknown one.
- `darkrank_soft_loss`: ``KL(P(· | S_teacher) ‖ P(· | S_student))`` over all ``(B − 1)!``
  permutations, computed exactly (Eq. 5, soft), mean over queries. The permutations are a
  constant index tensor, so the batch size must be static and at most
  `DARKRANK_SOFT_MAX_BATCH`.

DarkRank trains its student with supervised losses next to the transfer; the two that the
metric losses do not already cover live here too, as layers owning their weights:
`large_margin_softmax_loss` / `LargeMarginSoftmaxHead` (L-Softmax, Liu et al. 2016) and
`verification_loss` / `VerificationHead` (pairwise same/different classifier on ``(f_i − f_j)²``,
as in Zheng et al.'s re-identification work) and `contrastive_verification_loss` (the
``VerificationHead(mode="contrastive", margin=0.9)`` that 004's recipes use: a pull on positive
pairs and a hard margin on negative pairs, see its docstring for which source decided what).

Conventions: inputs are cast to float32, the teacher goes through ``tf.stop_gradient``, and
scores are computed from clamped squared distances so that duplicated rows (distance 0) keep
finite gradients for every ``β > 0``.
"""

import functools
import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
    "DARKRANK_SOFT_MAX_BATCH",
    "darkrank_scores",
    "darkrank_hard_loss",
    "darkrank_soft_loss",
    "large_margin_softmax_loss",
    "verification_loss",
    "contrastive_verification_loss",
    "DarkRankHardLoss",
    "DarkRankSoftLoss",
    "LargeMarginSoftmaxHead",
    "VerificationHead",
    "HEAD_FEATURES",
    "VERIFICATION_MODES",
]

# Largest batch `darkrank_soft_loss` enumerates: 7 candidates per query → 7! = 5040 permutations,
# a [8, 5040, 7] score tensor per side. 9 would already be 40320 permutations per query (8× the
# memory and time) for a loss whose hard variant is reported to perform the same (004_*, Table 1);
# the paper itself trains with batches of 8.
DARKRANK_SOFT_MAX_BATCH = 8

# Squared distances at or below this count as 0 before the power β/2 (see `darkrank_scores`).
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Scores and Plackett–Luce log-likelihoods
# --------------------------------------------------------------------------------------------


def _check_hyper(alpha, beta, what):
    if isinstance(alpha, (int, float)) and alpha <= 0:
        raise ValueError(f"{what}: alpha must be > 0, got {alpha}.")
    if isinstance(beta, (int, float)) and beta <= 0:
        raise ValueError(f"{what}: beta must be > 0, got {beta}.")


def _prepare(teacher, student, what):
    teacher = tf.stop_gradient(ops.as_float32(teacher))
    student = ops.as_float32(student)
    for x, who in ((teacher, "teacher"), (student, "student")):
        if x.shape.rank is not None and x.shape.rank != 2:
            raise ValueError(f"{what}: {who} must be [batch, dim], got shape {x.shape}.")
    # Only the lists must line up; the embedding dimensions may differ (scores are distances).
    b_t, b_s = teacher.shape[:1], student.shape[:1]
    if teacher.shape.rank is not None and student.shape.rank is not None:
        if not b_t.is_compatible_with(b_s):
            raise ValueError(
                f"{what}: teacher and student batch sizes differ (teacher shape {teacher.shape}, "
                f"student shape {student.shape})."
            )
    return teacher, student


def darkrank_scores(embeddings, alpha=3.0, beta=3.0):
    """``[B, B − 1]`` scores ``−α ‖x_i − x_j‖^β`` of each query ``i``'s candidates ``j != i``.

    Row ``i`` lists the candidates in index order with ``i`` itself left out, i.e. column ``k``
    is candidate ``k`` if ``k < i`` else ``k + 1``.

    Args:
      embeddings: ``[batch, dim]`` embeddings.
      alpha: the scale ``α`` of the score.
      beta: the contrast ``β`` (the power of the distance).

    Returns:
      ``[batch, batch − 1]`` float32 scores.
    """
    d2 = ops.pairwise_squared_distances(embeddings)
    # ‖·‖^β = (‖·‖²)^(β/2). The derivative (β/2)·d²^(β/2 − 1) is infinite at 0 for β < 2, and
    # d(d²)/dx through the root would be too, so zero distances are swapped for 1 before the
    # power and the result put back to 0: value 0, gradient 0.
    small = d2 <= _EPS
    powered = tf.pow(tf.where(small, tf.ones_like(d2), d2), tf.cast(beta, tf.float32) / 2.0)
    powered = tf.where(small, tf.zeros_like(d2), powered)
    scores = -tf.cast(alpha, tf.float32) * powered
    n = tf.shape(scores)[0]
    # Column k of row i is candidate k + [k >= i]: drops the diagonal with one batched gather
    # and keeps the candidates in index order (so ties break the same way for both models).
    k = tf.range(n - 1)[tf.newaxis, :]
    rows = tf.range(n)[:, tf.newaxis]
    candidates = k + tf.cast(k >= rows, k.dtype)
    return tf.gather(scores, candidates, batch_dims=1)


def _plackett_luce_log_prob(ranked_scores):
    """Log-probability of lists already in rank order: ``Σ_r s_r − logsumexp(s_r, …, s_n)``.

    Args:
      ranked_scores: ``[..., n]`` scores, the first entry ranked first.

    Returns:
      ``[...]`` log-probabilities.
    """
    tail_lse = tf.math.cumulative_logsumexp(ranked_scores, axis=-1, reverse=True)
    return tf.reduce_sum(ranked_scores - tail_lse, axis=-1)


def _mean(values):
    return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32))


@functools.lru_cache(maxsize=None)
def _permutations(n):
    """``[n!, n]`` int32 array of every permutation of ``range(n)`` (cached per n)."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int32)
    return perms.reshape(math.factorial(n), n)


# --------------------------------------------------------------------------------------------
# Rank transfer losses
# --------------------------------------------------------------------------------------------


def darkrank_hard_loss(teacher, student, alpha=3.0, beta=3.0):
    """Hard DarkRank transfer: ListMLE of the teacher's ranking under the student's scores.

    For each query (every row), the candidates (the other rows) are sorted by the teacher's
    scores ``−α ‖q − x‖^β``, descending (ties keep index order); the loss is the Plackett–Luce
    negative log-likelihood of that order under the student's scores,
    ``−Σ_r [ s_{π(r)} − log Σ_{m ≥ r} exp s_{π(m)} ]``, averaged over queries.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen; only their order is used).
      student: ``[batch, dim_s]`` student embeddings.
      alpha: the score scale ``α``.
      beta: the score contrast ``β``.

    Returns:
      A float32 scalar (0 for a batch of fewer than 2 rows).

    Raises:
      ValueError: for non-positive ``alpha``/``beta`` or different static batch sizes.

    Example:

    >>> t = tf.math.l2_normalize(tf.random.normal([16, 128]), axis=1)
    >>> s = tf.math.l2_normalize(tf.random.normal([16, 64]), axis=1)
    >>> loss = darkrank_hard_loss(t, s)
    """
    _check_hyper(alpha, beta, "darkrank_hard_loss")
    teacher, student = _prepare(teacher, student, "darkrank_hard_loss")
    t_scores = darkrank_scores(teacher, alpha, beta)
    s_scores = darkrank_scores(student, alpha, beta)
    # stable=True: tied teacher scores (duplicated images) rank in index order, deterministically.
    order = tf.argsort(t_scores, axis=1, direction="DESCENDING", stable=True)
    s_ranked = tf.gather(s_scores, order, batch_dims=1)
    return _mean(-_plackett_luce_log_prob(s_ranked))


def darkrank_soft_loss(teacher, student, alpha=3.0, beta=3.0):
    """Soft DarkRank transfer: exact KL between the teacher's and student's rank distributions.

    For each query (every row) with its ``n = B − 1`` candidates, both models' scores define
    Plackett–Luce distributions over the ``n!`` permutations of the list; the loss is
    ``Σ_π P_t(π) (log P_t(π) − log P_s(π))``, averaged over queries. All permutations are
    enumerated (a constant ``[n!, n]`` index tensor), so the cost grows as ``B · B! ``: the batch
    size must be known when the function is traced and at most `DARKRANK_SOFT_MAX_BATCH`
    (use `darkrank_hard_loss` for longer lists; with ``tf.data``, batch with
    ``drop_remainder=True``).

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen targets).
      student: ``[batch, dim_s]`` student embeddings.
      alpha: the score scale ``α``.
      beta: the score contrast ``β``.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: for a batch larger than `DARKRANK_SOFT_MAX_BATCH` or of unknown (``None``)
        size, non-positive ``alpha``/``beta``, or different static batch sizes.

    Example:

    >>> t = tf.math.l2_normalize(tf.random.normal([8, 128]), axis=1)
    >>> s = tf.math.l2_normalize(tf.random.normal([8, 64]), axis=1)
    >>> loss = darkrank_soft_loss(t, s)  # 8 queries × 5040 permutations
    """
    _check_hyper(alpha, beta, "darkrank_soft_loss")
    teacher, student = _prepare(teacher, student, "darkrank_soft_loss")
    batch = student.shape[0] if student.shape.rank else None
    if batch is None and teacher.shape.rank:
        batch = teacher.shape[0]
    if batch is None:
        raise ValueError(
            "darkrank_soft_loss enumerates all permutations of each candidate list, so the batch "
            "size must be static (known when the function is traced), got None; batch with "
            f"drop_remainder=True and a size of at most DARKRANK_SOFT_MAX_BATCH="
            f"{DARKRANK_SOFT_MAX_BATCH}, or use darkrank_hard_loss."
        )
    if batch > DARKRANK_SOFT_MAX_BATCH:
        raise ValueError(
            f"darkrank_soft_loss: batch size {batch} is too large to enumerate "
            f"({batch - 1}! permutations per query); the largest batch size allowed is "
            f"DARKRANK_SOFT_MAX_BATCH={DARKRANK_SOFT_MAX_BATCH}. Use darkrank_hard_loss for "
            "larger batches."
        )
    if batch < 2:
        return tf.zeros([], tf.float32)
    perms = tf.constant(_permutations(batch - 1))  # [P, n]
    # [B, n] → [B, P, n]: every query's scores laid out in every rank order at once.
    log_p_t = _plackett_luce_log_prob(tf.gather(darkrank_scores(teacher, alpha, beta), perms,
                                                axis=1))
    log_p_s = _plackett_luce_log_prob(tf.gather(darkrank_scores(student, alpha, beta), perms,
                                                axis=1))
    kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=1)
    return _mean(kl)


# --------------------------------------------------------------------------------------------
# Supervised losses DarkRank trains its student with
# --------------------------------------------------------------------------------------------


def _chebyshev_cos_multiple(cos, m):
    """``cos(mθ)`` from ``cos θ``: ``Σ_n (−1)^n C(m, 2n) cos^{m−2n}θ (1 − cos²θ)^n``.

    A polynomial in ``cos θ``, so no ``acos`` (whose gradient is infinite at ±1) is needed.
    """
    sin2 = 1.0 - tf.square(cos)
    # Integer powers by repeated products: tf.pow(x, 0.0) has a NaN gradient (0 · x^-1) at x = 0.
    cos_pow = [tf.ones_like(cos)]
    sin2_pow = [tf.ones_like(cos)]
    for _ in range(m):  # over the (static) margin, not over data
        cos_pow.append(cos_pow[-1] * cos)
        sin2_pow.append(sin2_pow[-1] * sin2)
    total = tf.zeros_like(cos)
    for n in range(m // 2 + 1):
        total += float((-1) ** n * math.comb(m, 2 * n)) * cos_pow[m - 2 * n] * sin2_pow[n]
    return total


def large_margin_softmax_loss(labels, embeddings, weights, margin=2, lam=0.0):
    """Large-margin softmax (L-Softmax, Liu et al. 2016) cross-entropy, mean over the batch.

    With ``θ_j`` the angle between embedding ``x`` and class weight ``W_j`` (no bias), the logit
    of class ``j`` is ``‖W_j‖ ‖x‖ cos θ_j``, except for the true class ``y``, whose logit is
    ``‖W_y‖ ‖x‖ ψ(θ_y)`` with ``ψ(θ) = (−1)^k cos(mθ) − 2k`` for ``θ ∈ [kπ/m, (k+1)π/m]``: the
    true class must win by an angular margin of factor ``m``. ``cos(mθ)`` is expanded as a
    Chebyshev polynomial in ``cos θ`` and ``k`` is found by comparing ``cos θ`` with
    ``cos(kπ/m)``, so no ``acos`` is differentiated.

    Args:
      labels: ``[batch]`` class ids in ``[0, num_classes)``.
      embeddings: ``[batch, dim]`` features (DarkRank uses the un-normalised FC output).
      weights: ``[num_classes, dim]`` class weights.
      margin: the integer margin ``m`` >= 1 (``m = 1`` is the plain bias-free softmax).
      lam: the annealing weight ``λ`` of the paper's implementation: the true-class logit is
        ``‖W_y‖ ‖x‖ (λ cos θ_y + ψ(θ_y)) / (1 + λ)``; 0 (the default) is pure L-Softmax, a large
        value starts training close to the plain softmax.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: for a margin that is not an integer >= 1 or a negative ``lam``.

    Example:

    >>> w = tf.random.normal([10, 64])
    >>> loss = large_margin_softmax_loss(labels, embeddings, w, margin=3)
    """
    if int(margin) != margin or margin < 1:
        raise ValueError(
            f"large_margin_softmax_loss: margin must be an integer >= 1, got {margin}."
        )
    if isinstance(lam, (int, float)) and lam < 0:
        raise ValueError(f"large_margin_softmax_loss: lam must be >= 0, got {lam}.")
    m = int(margin)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    x = ops.as_float32(embeddings)
    w = ops.as_float32(weights)
    x_norm = ops.safe_sqrt(tf.reduce_sum(tf.square(x), axis=1))  # [B]
    w_norm = ops.safe_sqrt(tf.reduce_sum(tf.square(w), axis=1))  # [C]
    dots = tf.matmul(x, w, transpose_b=True)  # [B, C] = ‖W_j‖‖x‖cos θ_j
    norms = x_norm[:, tf.newaxis] * w_norm[tf.newaxis, :]
    # Clamp the denominator (a zero embedding has cos 0, not NaN) and the rounding beyond ±1.
    cos = tf.clip_by_value(dots / tf.maximum(norms, 1e-12), -1.0, 1.0)
    cos_y = tf.gather(cos, labels, batch_dims=1)
    # k = #{j in 1..m-1 : θ >= jπ/m}; a step function, so it carries no gradient.
    k = tf.zeros_like(cos_y)
    for j in range(1, m):  # over the (static) margin, not over data
        k += tf.cast(cos_y <= math.cos(j * math.pi / m), tf.float32)
    sign = 1.0 - 2.0 * tf.math.floormod(k, 2.0)  # (−1)^k
    psi = sign * _chebyshev_cos_multiple(cos_y, m) - 2.0 * k
    lam = tf.cast(lam, tf.float32)
    target = tf.gather(norms, labels, batch_dims=1) * (lam * cos_y + psi) / (1.0 + lam)
    one_hot = tf.one_hot(labels, tf.shape(w)[0], dtype=tf.float32)
    logits = dots + one_hot * (target - tf.gather(dots, labels, batch_dims=1))[:, tf.newaxis]
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _mean(ce)


def verification_loss(labels, embeddings, weights, bias):
    """Pairwise verification loss: a logistic same/different classifier on ``(f_i − f_j)²``.

    For every ordered pair ``i != j`` the logit is ``Σ_d w_d (f_id − f_jd)² + b`` and the target
    is 1 when the labels match; the loss is the mean binary cross-entropy over the ``B (B − 1)``
    pairs. (A two-way softmax on the same feature, as in Zheng et al., is the same model with
    ``w = w_same − w_diff``.) The logits are expanded as ``Σ w f_i² + Σ w f_j² − 2 Σ w f_i f_j``,
    one matmul instead of a ``[B, B, dim]`` tensor.

    Args:
      labels: ``[batch]`` labels (compared by equality).
      embeddings: ``[batch, dim]`` embeddings.
      weights: ``[dim]`` weight vector ``w``.
      bias: scalar bias ``b``.

    Returns:
      A float32 scalar (0 for a batch of fewer than 2 rows).

    Example:

    >>> loss = verification_loss(labels, embeddings, tf.zeros([128]), 0.0)  # log 2
    """
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
    x = ops.as_float32(embeddings)
    w = tf.reshape(ops.as_float32(weights), [-1])
    b = tf.reshape(ops.as_float32(bias), [])
    xw = x * w
    sq = tf.reduce_sum(xw * x, axis=1)
    logits = sq[:, tf.newaxis] + sq[tf.newaxis, :] - 2.0 * tf.matmul(xw, x, transpose_b=True) + b
    targets = tf.cast(ops.same_label_mask(labels), tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    n = tf.shape(x)[0]
    mask = ops.off_diagonal_mask(n, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(bce * mask), tf.cast(n * (n - 1), tf.float32))


def contrastive_verification_loss(labels, embeddings, margin=0.9):
    """Verification loss with a margin (004: "margin 0.9 in both triplet and verification loss").

    With ``h_ij = ½ ‖f_i − f_j‖²`` (half the squared distance), mean over ordered pairs
    ``i != j`` of ``y_ij · h_ij + (1 − y_ij) · max(0, m − h_ij)``, ``y_ij = 1`` for a pair with
    the same label: positive pairs are pulled together, negative pairs pushed apart until
    ``h ≥ m``. For L2-normalised embeddings ``h = 1 − cos``, so ``m = 0.9`` asks negatives for a
    cosine below 0.1. It equals ``½ · contrastive_loss(labels, f, margin=2m)``.

    Which source decided what (DESIGN §6): 004 names a verification loss after Bromley et al.
    (a siamese same/different loss) and says it "tries to enforce a hard margin between the
    anchor and negative samples", with margin 0.9, but gives no formula. The authors' public code
    (TuSimple/DarkRank, ``PYOP/lmnn.py``, the loss ``reid.py`` attaches to the L2-normalised
    embedding) has no separate verification operator: its "LMNN" loss is a positive-pair pull
    ``½ ‖a − p‖²`` plus, weighted by ε = 0.1, a triplet hinge on the same half-squared distances,
    ``max(0, ½‖a − p‖² − ½‖a − n‖² + 0.9)``. So the positive term and the scale the margin
    applies to (half-squared distances, margin added unscaled) are the code's; the hard margin on
    each negative pair is the paper's description (a Bromley / Hadsell contrastive form); the
    mean over ordered pairs is ours (as `verification_loss` and DESIGN §4's `contrastive_loss`).
    Only squared distances appear: gradients are finite for duplicated rows.

    Args:
      labels: ``[batch]`` labels (compared by equality).
      embeddings: ``[batch, dim]`` embeddings (004: the L2-normalised ones).
      margin: ``m`` on the half-squared distance of negative pairs (004: 0.9).

    Returns:
      A float32 scalar (0 for a batch of fewer than 2 rows).

    Example:

    >>> labels = tf.constant([0, 0, 1])
    >>> f = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> # pairs (0,1): same, h = 1; (0,2): h = 0 → 0.9; (1,2): h = 1 ≥ m → 0; each twice
    >>> round(float(contrastive_verification_loss(labels, f, margin=0.9)), 4)  # 3.8 / 6
    0.6333
    """
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
    x = ops.as_float32(embeddings)
    half_d2 = 0.5 * ops.pairwise_squared_distances(x)
    same = tf.cast(ops.same_label_mask(labels), tf.float32)
    per_pair = same * half_d2 + (1.0 - same) * tf.nn.relu(tf.cast(margin, tf.float32) - half_d2)
    n = tf.shape(x)[0]
    mask = ops.off_diagonal_mask(n, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pair * mask),
                                 tf.cast(n * (n - 1), tf.float32))


# --------------------------------------------------------------------------------------------
# Keras Loss classes
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfembed")
class DarkRankHardLoss(EmbeddingLoss):
    """Loss class of `darkrank_hard_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      alpha: the score scale ``α``.
      beta: the score contrast ``β``.
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    >>> student.compile(optimizer="adam", loss=DarkRankHardLoss(alpha=3.0, beta=3.0))
    """

    def __init__(self, alpha=3.0, beta=3.0, name="darkrank_hard_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(darkrank_hard_loss, name=name, reduction=reduction, dtype=dtype,
                         alpha=alpha, beta=beta)


@keras.saving.register_keras_serializable(package="tfembed")
class DarkRankSoftLoss(EmbeddingLoss):
    """Loss class of `darkrank_soft_loss` (``y_true`` = teacher, ``y_pred`` = student).

    The batch size must be static and at most `DARKRANK_SOFT_MAX_BATCH` (batch the dataset with
    ``drop_remainder=True``).

    Args:
      alpha, beta, name, reduction, dtype: as for `DarkRankHardLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=DarkRankSoftLoss())
    >>> student.fit(dataset.batch(8, drop_remainder=True))
    """

    def __init__(self, alpha=3.0, beta=3.0, name="darkrank_soft_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(darkrank_soft_loss, name=name, reduction=reduction, dtype=dtype,
                         alpha=alpha, beta=beta)


# --------------------------------------------------------------------------------------------
# Heads owning weights
# --------------------------------------------------------------------------------------------


#: What a head's ``features`` may name: the L2-normalised embedding or the pre-normalisation FC
#: output (``Distiller`` feeds each head accordingly).
HEAD_FEATURES = ("embedding", "fc")
#: `VerificationHead` modes.
VERIFICATION_MODES = ("logistic", "contrastive")


def _check_features(features):
    if features not in HEAD_FEATURES:
        raise ValueError(f"features must be one of {HEAD_FEATURES}, got {features!r}.")
    return features


@keras.saving.register_keras_serializable(package="tfembed")
class LargeMarginSoftmaxHead(keras.layers.Layer):
    """Owns the ``[num_classes, dim]`` class weights; ``call(embeddings, labels)`` is L-Softmax.

    Args:
      num_classes: number of classes ``C`` (labels are ids in ``[0, C)``).
      margin: the integer angular margin ``m`` (DarkRank uses 3).
      lam: the annealing weight of `large_margin_softmax_loss` (0 = pure L-Softmax).
      initializer: initializer of the class weights.
      features: which student output a trainer feeds the head (``Distiller``): ``"fc"``
        (default; the pre-normalisation FC output, layer ``embedding_dense``: 004 "The large
        margin softmax loss is directly connected to the fully connected layer", and L-Softmax
        is defined on unnormalised features, whose norm scales the logits) or ``"embedding"``
        (the L2-normalised embedding, which caps every logit at ``‖W_j‖``).
      **kwargs: ``keras.layers.Layer`` arguments.

    Returns (from ``call``):
      The float32 scalar loss, for the trainer to add to its objective.

    Example:

    >>> head = LargeMarginSoftmaxHead(num_classes=751, margin=3)
    >>> with tf.GradientTape() as tape:
    ...     loss = head(features, labels)
    """

    def __init__(self, num_classes, margin=2, lam=0.0, initializer="glorot_uniform",
                 features="fc", **kwargs):
        # The loss runs in float32 whatever the global policy (a float16 softmax over many
        # classes loses the margin), so the weights are float32 too.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if int(margin) != margin or margin < 1:
            raise ValueError(f"margin must be an integer >= 1, got {margin}.")
        self.num_classes = int(num_classes)
        self.margin = int(margin)
        self.lam = float(lam)
        self.initializer = keras.initializers.get(initializer)
        self.features = _check_features(features)

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        if dim is None:
            raise ValueError("The embedding dimension must be known to build the class weights.")
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, int(dim)),
                                      initializer=self.initializer, trainable=True)

    def call(self, embeddings, labels):
        return large_margin_softmax_loss(labels, embeddings, self.kernel, margin=self.margin,
                                         lam=self.lam)

    def logits(self, embeddings):
        """Class logits ``W f`` without the margin (what the head predicts at test time, and
        what Hinton KD compares, DarkRank's "KD" setting)."""
        return tf.matmul(tf.cast(embeddings, tf.float32), self.kernel, transpose_b=True)

    @classmethod
    def from_config(cls, config):
        # Heads saved before ``features`` existed were fed the L2-normalised embedding.
        return super().from_config({"features": "embedding", **config})

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, margin=self.margin, lam=self.lam,
                      features=self.features,
                      initializer=keras.initializers.serialize(self.initializer))
        return config


@keras.saving.register_keras_serializable(package="tfembed")
class VerificationHead(keras.layers.Layer):
    """A verification (same / different pair) loss on the embeddings, as a layer.

    ``call(embeddings, labels)`` returns the loss of ``mode``:

    * ``"logistic"`` (default): `verification_loss`, a logistic classifier on ``(f_i − f_j)²``;
      the layer owns its ``[dim]`` weight and bias.
    * ``"contrastive"``: `contrastive_verification_loss` with ``margin`` (004's verification
      loss with its margin 0.9; no weights).

    Args:
      mode: ``"logistic"`` or ``"contrastive"``.
      margin: the margin of the contrastive mode (on ``½‖f_i − f_j‖²``; 004: 0.9).
      initializer: initializer of the logistic weight vector (zeros: every pair starts at
        probability 1/2, and the gradient ``Σ (σ − y) (f_i − f_j)²`` is still non-zero).
      features: which student output a trainer feeds the head (``Distiller``): ``"embedding"``
        (the L2-normalised embedding, default: 004 builds every loss but L-Softmax on it) or
        ``"fc"`` (the pre-normalisation FC output).
      **kwargs: ``keras.layers.Layer`` arguments.

    Returns (from ``call``):
      The float32 scalar loss, for the trainer to add to its objective.

    Example:

    >>> head = VerificationHead(mode="contrastive", margin=0.9)
    >>> loss = head(embeddings, labels)
    """

    def __init__(self, mode="logistic", margin=0.9, initializer="zeros", features="embedding",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in VERIFICATION_MODES:
            raise ValueError(f"mode must be one of {VERIFICATION_MODES}, got {mode!r}.")
        self.mode = mode
        self.margin = float(margin)
        self.initializer = keras.initializers.get(initializer)
        self.features = _check_features(features)

    def build(self, embeddings_shape, labels_shape=None):
        if self.mode != "logistic":
            self.built = True
            return
        dim = embeddings_shape[-1]
        if dim is None:
            raise ValueError("The embedding dimension must be known to build the weights.")
        self.kernel = self.add_weight(name="kernel", shape=(int(dim),),
                                      initializer=self.initializer, trainable=True)
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros", trainable=True)

    def call(self, embeddings, labels):
        if self.mode == "contrastive":
            return contrastive_verification_loss(labels, embeddings, margin=self.margin)
        return verification_loss(labels, embeddings, self.kernel, self.bias)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, margin=self.margin, features=self.features,
                      initializer=keras.initializers.serialize(self.initializer))
        return config
