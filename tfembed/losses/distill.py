"""Embedding distillation losses on ``(teacher, student)`` embeddings.

Stochastic neighbour distillation (SND, Feng et al., ``000_*`` §3.2, Eq. 2-4) and relational
knowledge distillation (RKD, Park et al. CVPR 2019, as used in ``000_*`` §3.1, Eq. 1): the student
mimics the *relations* between the rows of a batch (neighbour distributions, normalised distances,
angles), not the teacher's coordinates, so the two embeddings may have different dimensions.

Every loss is a pure function ``fn(teacher, student, **hyper_parameters) -> scalar`` plus a thin
``keras.losses.Loss`` class (``model.compile(loss=...)`` passes ``y_true`` = teacher embeddings
``[batch, dim_t]`` and ``y_pred`` = student embeddings ``[batch, dim_s]``).

Conventions shared by all functions:

- Inputs are cast to float32; distances are Euclidean on the embeddings as given, through
  ``tfembed.ops`` so that identical rows keep finite gradients.
- The teacher is a frozen target: everything derived from it is under ``tf.stop_gradient``, so
  a tape never sends gradients into a teacher even when it was called inside the tape.
- All work is vectorised over the batch, and the batch size may be unknown (``None``).
- A batch with fewer than two rows has no pair to compare and gives 0, never NaN.
"""

import math

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
    "snd_loss",
    "calibrate_sigma",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "rkd_loss",
    "SNDLoss",
    "RKDDistanceLoss",
    "RKDAngleLoss",
    "RKDLoss",
]

_INF = float("inf")
_LN2 = math.log(2.0)

# Bracket of the perplexity bisection, relative to each row's own distance gaps (see
# `_calibrate_log_beta`): at beta * max_gap = 1e-6 the distribution is uniform to ~1e-12 in
# entropy, at beta * min_gap = 50 the nearest neighbours hold all but exp(-50) of the mass.
_BRACKET_LOW = 1e-6
_BRACKET_HIGH = 50.0
# |log beta| above this would overflow float32 in exp(); the bracket is clipped to it.
_MAX_LOG_BETA = 80.0


def _teacher(teacher):
    # Teachers are frozen targets (DESIGN §5): no gradient may reach them through the loss.
    return tf.stop_gradient(ops.as_float32(teacher))


def _batch_size(x):
    return tf.shape(x)[0]


def _huber(x, delta):
    """Elementwise Huber: ``0.5 x^2`` for ``|x| <= delta``, else ``delta (|x| - 0.5 delta)``."""
    abs_x = tf.abs(x)
    # Split |x| into its quadratic part (up to delta) and the linear rest; this is the same
    # function as the two-branch definition but has no tf.where whose other branch could leak.
    quadratic = tf.minimum(abs_x, delta)
    linear = abs_x - quadratic
    return 0.5 * tf.square(quadratic) + delta * linear


# --------------------------------------------------------------------------------------------
# Stochastic neighbour distillation
# --------------------------------------------------------------------------------------------


def _as_row_column(value):
    """Scalar or ``[B]`` per-row hyper-parameter as a ``[1, 1]`` / ``[B, 1]`` column."""
    return tf.reshape(ops.as_float32(value), [-1, 1])


def _calibrate_log_beta(distances_sq, perplexity, num_iters):
    """Per-row ``log beta`` (``beta = 1 / (2 sigma^2)``) matching ``perplexity``; ``[B]``.

    Returns ``(log_beta, degenerate)`` where ``degenerate`` marks rows whose distances to all
    other rows are equal (entropy independent of beta); their ``log_beta`` is filled in by the
    caller's policy (see `calibrate_sigma`).
    """
    d2 = tf.stop_gradient(ops.as_float32(distances_sq))
    n = _batch_size(d2)
    off_diagonal = ops.off_diagonal_mask(n)

    # Softmax is shift-invariant, so work with each row's gaps above its nearest neighbour:
    # the nearest logit is exactly 0, the row's log-sum-exp never overflows, and the bracket
    # can be expressed in the row's own scale (bisection is then scale-invariant).
    row_min = tf.reduce_min(tf.where(off_diagonal, d2, _INF), axis=1, keepdims=True)
    gaps = tf.where(off_diagonal, d2 - row_min, 0.0)
    max_gap = tf.reduce_max(gaps, axis=1)
    # Gaps at or below the eps under which tfembed.ops calls two rows identical are rounding
    # noise, not structure to calibrate on.
    min_positive_gap = tf.reduce_min(tf.where(gaps > ops._EPS, gaps, _INF), axis=1)
    degenerate = tf.logical_not(max_gap > ops._EPS)  # also catches B < 2 (no off-diagonal)
    max_gap = tf.where(degenerate, 1.0, max_gap)
    min_positive_gap = tf.where(degenerate, 1.0, min_positive_gap)

    # H(beta) decreases monotonically from log2(B - 1) (beta = 0) to log2(#nearest ties)
    # (beta -> inf); this bracket holds every reachable target, and an unreachable one makes
    # the bisection run into the near end of the bracket instead of diverging.
    low = tf.clip_by_value(
        math.log(_BRACKET_LOW) - tf.math.log(max_gap), -_MAX_LOG_BETA, _MAX_LOG_BETA)
    high = tf.clip_by_value(
        math.log(_BRACKET_HIGH) - tf.math.log(min_positive_gap), -_MAX_LOG_BETA, _MAX_LOG_BETA)
    high = tf.maximum(high, low)
    target_bits = tf.math.log(ops.as_float32(perplexity)) / _LN2
    log_beta = _bisect_log_beta(gaps, off_diagonal, low, high, target_bits,
                                tf.cast(num_iters, tf.int32))
    return tf.stop_gradient(log_beta), degenerate


# Compiled once for any batch size: called eagerly, a tf.while_loop would run its 64 steps as
# Python; inside a caller's tf.function this is simply inlined as a function call.
@tf.function(input_signature=[
    tf.TensorSpec([None, None], tf.float32),
    tf.TensorSpec([None, None], tf.bool),
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.int32),
])
def _bisect_log_beta(gaps, off_diagonal, low, high, target_bits, num_iters):
    """Bisection of every row's ``log beta`` in ``[low, high]`` for ``H(P_i) = target_bits``."""

    def entropy_bits(log_beta):
        logits = tf.where(off_diagonal, -tf.exp(log_beta)[:, None] * gaps, -_INF)
        log_p = tf.nn.log_softmax(logits, axis=1)
        p = tf.exp(log_p)
        # p = 0 (diagonal, or an underflowed far neighbour) contributes 0, not 0 * -inf = NaN.
        plogp = tf.where(p > 0.0, p * log_p, 0.0)
        return -tf.reduce_sum(plogp, axis=1) / _LN2

    def body(i, low, high):
        mid = 0.5 * (low + high)
        too_flat = entropy_bits(mid) > target_bits  # perplexity too high: sharpen (beta up)
        return i + 1, tf.where(too_flat, mid, low), tf.where(too_flat, high, mid)

    # A fixed iteration count keeps the graph static (no per-row Python loop, no retracing);
    # float32 log beta stops changing after ~30 halvings, further ones are no-ops.
    _, low, high = tf.while_loop(
        lambda i, low, high: i < num_iters, body, (tf.constant(0), low, high))
    return 0.5 * (low + high)


def _fill_degenerate(log_beta, degenerate):
    """Rows whose entropy does not depend on beta get the batch's typical beta.

    Their P_i is uniform whatever beta is, but Q_i (student side) is not, so the choice matters:
    the geometric mean of the other rows' beta keeps the scale of the batch; with no informative
    row at all (e.g. every row identical) beta = 1/2, i.e. sigma = 1, the `snd_loss` default.
    """
    informative = tf.cast(tf.logical_not(degenerate), tf.float32)
    typical = tf.math.divide_no_nan(
        tf.reduce_sum(informative * log_beta), tf.reduce_sum(informative))
    typical = tf.where(tf.reduce_sum(informative) > 0.0, typical, math.log(0.5))
    return tf.where(degenerate, typical, log_beta)


def calibrate_sigma(distances_sq, perplexity, num_iters=64):
    """Per-row Gaussian widths whose neighbour distributions have a given perplexity.

    For every row ``i`` of a squared-distance matrix, finds ``sigma_i`` such that
    ``P_i = softmax_{j != i}(-d2_ij / (2 sigma_i^2))`` has ``2^H(P_i) = perplexity`` (``H`` in
    bits, the diagonal excluded), as in SNE/t-SNE. All rows are solved at once by bisection on
    ``log beta`` (``beta = 1 / (2 sigma^2)``) for a fixed number of iterations, inside the graph,
    within a bracket derived from each row's own distance gaps, so the result does not depend on
    the scale of the distances (scaling ``d2`` by ``c^2`` scales ``sigma`` by ``c``).

    Edge cases (all finite, never NaN):

    - perplexity at or above ``B - 1`` (the uniform distribution) is unreachable: ``sigma_i`` is
      then the large end of the bracket, where ``P_i`` is uniform to float precision;
    - perplexity below the number of nearest-neighbour ties of a row (usually 1) gives the small
      end of the bracket, where ``P_i`` is concentrated on those nearest neighbours;
    - rows whose distances to all other rows are equal (e.g. a batch of identical rows, or
      ``B = 2``) have a uniform ``P_i`` for any ``sigma``; they get the geometric mean of the
      other rows' ``sigma``, or ``sigma = 1`` if no row is informative.

    No gradient flows through the result.

    Args:
      distances_sq: ``[B, B]`` squared distances (the diagonal is ignored).
      perplexity: target perplexity, ``>= 1`` (the effective number of neighbours).
      num_iters: number of bisection steps (64 is far beyond float32 resolution).

    Returns:
      ``[B]`` float32 ``sigma``.

    Example:

    >>> x = tf.random.normal([16, 8])
    >>> sigma = calibrate_sigma(tfembed.ops.pairwise_squared_distances(x), perplexity=5.0)
    >>> sigma.shape
    TensorShape([16])
    """
    _check_perplexity(perplexity)
    log_beta, degenerate = _calibrate_log_beta(distances_sq, perplexity, num_iters)
    log_beta = _fill_degenerate(log_beta, degenerate)
    # sigma = sqrt(1 / (2 beta)), in the log domain so a tiny beta cannot produce inf.
    return tf.exp(-0.5 * (log_beta + _LN2))


def _check_perplexity(perplexity):
    if isinstance(perplexity, (int, float)) and not perplexity >= 1.0:
        raise ValueError(f"perplexity must be >= 1 (a number of neighbours), got {perplexity!r}.")


def snd_loss(teacher, student, sigma=1.0, student_sigma=None, perplexity=None, num_iters=64):
    """Stochastic neighbour distillation (Feng et al., ``000_*`` Eq. 2-4).

    Row ``i`` picks neighbour ``j != i`` with probability
    ``p_ij = softmax_{j != i}(-||t_i - t_j||^2 / (2 sigma_i^2))`` in the teacher and
    ``q_ij = softmax_{j != i}(-||s_i - s_j||^2 / (2 sigma'_i^2))`` in the student; the loss is
    the mean over rows of ``KL(P_i || Q_i)`` (the paper sums over rows; the mean keeps the scale
    independent of the batch size).

    With ``perplexity`` given, ``sigma_i`` is calibrated per row on the teacher distances (see
    `calibrate_sigma`) and the student uses the same ``sigma_i``; ``sigma`` is then ignored.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (no gradient flows into them).
      student: ``[batch, dim_s]`` student embeddings.
      sigma: teacher kernel width: a Python float, a scalar tensor or a ``[batch]`` tensor.
      student_sigma: student kernel width, same forms; defaults to ``sigma``.
      perplexity: optional target perplexity (``>= 1``); excludes ``student_sigma``.
      num_iters: bisection steps of the perplexity calibration.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: if both ``perplexity`` and ``student_sigma`` are given, or ``perplexity < 1``.

    Example:

    >>> teacher = tf.random.normal([8, 16])
    >>> student = tf.random.normal([8, 4])
    >>> float(snd_loss(teacher, teacher, sigma=0.5))
    0.0
    >>> snd_loss(teacher, student, perplexity=3.0).shape
    TensorShape([])
    """
    if perplexity is not None:
        if student_sigma is not None:
            raise ValueError(
                "snd_loss: with `perplexity` the student uses the teacher's calibrated sigma; "
                "do not pass `student_sigma` as well.")
        _check_perplexity(perplexity)
    teacher = _teacher(teacher)
    student = ops.as_float32(student)
    d2_t = ops.pairwise_squared_distances(teacher)
    d2_s = ops.pairwise_squared_distances(student)
    n = _batch_size(teacher)
    off_diagonal = ops.off_diagonal_mask(n)

    if perplexity is not None:
        log_beta, degenerate = _calibrate_log_beta(d2_t, perplexity, num_iters)
        beta_t = tf.exp(_fill_degenerate(log_beta, degenerate))[:, None]
        beta_s = beta_t
    else:
        sigma_t = _as_row_column(sigma)
        sigma_s = sigma_t if student_sigma is None else _as_row_column(student_sigma)
        beta_t = tf.stop_gradient(0.5 / tf.square(sigma_t))
        beta_s = 0.5 / tf.square(sigma_s)

    # j = i is not a neighbour: -inf logit on the diagonal. A single-row batch would then have
    # an all -inf row (NaN softmax and NaN gradients even under a mask), so there the diagonal
    # keeps its finite logit and the KL mask below zeroes it.
    excluded = tf.where(n > 1, -_INF, 0.0)
    log_p = tf.nn.log_softmax(tf.where(off_diagonal, -beta_t * d2_t, excluded), axis=1)
    log_q = tf.nn.log_softmax(tf.where(off_diagonal, -beta_s * d2_s, excluded), axis=1)
    p = tf.exp(log_p)
    # p_ij log(p_ij / q_ij) with the 0 log 0 = 0 convention: the diagonal and underflowed
    # teacher probabilities would otherwise give 0 * (-inf) = NaN (forward and backward).
    kl_terms = tf.where(tf.logical_and(off_diagonal, p > 0.0), p * (log_p - log_q), 0.0)
    return tf.math.divide_no_nan(tf.reduce_sum(kl_terms), tf.cast(n, tf.float32))


# --------------------------------------------------------------------------------------------
# Relational knowledge distillation
# --------------------------------------------------------------------------------------------


def _mean_normalised_distances(x):
    """Pairwise distances divided by their mean over ordered pairs ``i != j``."""
    d = ops.pairwise_distances(x)  # diagonal exactly 0, so the plain sum is the off-diagonal sum
    n = tf.cast(_batch_size(x), tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(d), n * (n - 1.0))
    # A collapsed embedding (all rows equal) has mean 0: its normalised distances are 0, with
    # zero (not NaN) gradients, instead of 0/0.
    return tf.math.divide_no_nan(d, mean)


def rkd_distance_loss(teacher, student, delta=1.0):
    """Distance-wise relational knowledge distillation (RKD-D; ``000_*`` Eq. 1).

    Each model's pairwise Euclidean distances are divided by their own mean over the ordered
    pairs ``i != j`` of the batch, which removes the embeddings' overall scale; the loss is the
    mean over ordered pairs ``i != j`` of ``Huber_delta(d_s - d_t)``.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (no gradient flows into them).
      student: ``[batch, dim_s]`` student embeddings.
      delta: Huber threshold (1 is the smooth-L1 of the RKD paper).

    Returns:
      A float32 scalar.

    Example:

    >>> teacher = tf.random.normal([8, 16])
    >>> float(rkd_distance_loss(teacher, 3.0 * teacher)) < 1e-6  # scale-free
    True
    """
    teacher = _teacher(teacher)
    student = ops.as_float32(student)
    d_t = _mean_normalised_distances(teacher)
    d_s = _mean_normalised_distances(student)
    n = tf.cast(_batch_size(student), tf.float32)
    # Diagonal entries are 0 - 0 and add Huber(0) = 0: summing everything is the pair sum.
    total = tf.reduce_sum(_huber(d_s - d_t, delta))
    return tf.math.divide_no_nan(total, n * (n - 1.0))


def _unit_differences(x):
    """``[B, B, D]`` tensor ``e[j, i] = (x_i - x_j) / ||x_i - x_j||``, 0 where ``x_i = x_j``.

    Indexed by the vertex ``j`` first so that the angle tensor is one batched matmul.
    """
    diff = x[None, :, :] - x[:, None, :]
    norm_sq = tf.reduce_sum(tf.square(diff), axis=-1, keepdims=True)
    # Coinciding rows (the diagonal, duplicates) have no direction: their unit vector is 0 with
    # gradient 0. l2_normalize would also give 0 there, but with a 1/sqrt(eps) ~ 1e6 gradient.
    nonzero = norm_sq > ops._EPS
    inv_norm = tf.where(nonzero, tf.math.rsqrt(tf.where(nonzero, norm_sq, 1.0)), 0.0)
    return diff * inv_norm


def _angles(x):
    """``[B, B, B]`` cosines ``cos[j, i, k] = <e_ij, e_kj>`` at vertex ``j``."""
    e = _unit_differences(x)
    # For each vertex j: E_j E_j^T with E_j = e[j] ([B, D]); B^3 scalars, never B^3 x D.
    return tf.matmul(e, e, transpose_b=True)


def rkd_angle_loss(teacher, student, delta=1.0):
    """Angle-wise relational knowledge distillation (RKD-A, Park et al. 2019).

    With ``e_ij = (x_i - x_j) / ||x_i - x_j||`` (defined as 0 for coinciding rows), the angle
    at vertex ``j`` of the triple ``(i, j, k)`` is ``cos = <e_ij, e_kj>``; the loss is the mean
    over all triples with ``i != j`` and ``k != j`` (``i = k`` included, where ``cos = 1``) of
    ``Huber_delta(cos_s - cos_t)``. Angles are invariant to translating and scaling either
    embedding. Memory is ``O(B^2 D + B^3)``.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (no gradient flows into them).
      student: ``[batch, dim_s]`` student embeddings.
      delta: Huber threshold.

    Returns:
      A float32 scalar.

    Example:

    >>> teacher = tf.random.normal([8, 16])
    >>> float(rkd_angle_loss(teacher, 2.0 * teacher + 1.0)) < 1e-6  # similar shapes
    True
    """
    teacher = _teacher(teacher)
    student = ops.as_float32(student)
    cos_t = _angles(teacher)
    cos_s = _angles(student)
    n = _batch_size(student)
    off_diagonal = ops.off_diagonal_mask(n)  # [j, i]: True where i != j
    valid = tf.logical_and(off_diagonal[:, :, None], off_diagonal[:, None, :])
    total = tf.reduce_sum(tf.where(valid, _huber(cos_s - cos_t, delta), 0.0))
    n = tf.cast(n, tf.float32)
    return tf.math.divide_no_nan(total, n * tf.square(n - 1.0))


def rkd_loss(teacher, student, distance_weight=1.0, angle_weight=2.0, delta=1.0):
    """RKD-DA: ``distance_weight * rkd_distance_loss + angle_weight * rkd_angle_loss``.

    The default 1:2 weighting is the RKD paper's.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (no gradient flows into them).
      student: ``[batch, dim_s]`` student embeddings.
      distance_weight: weight of `rkd_distance_loss`.
      angle_weight: weight of `rkd_angle_loss`.
      delta: Huber threshold of both terms.

    Returns:
      A float32 scalar.

    Example:

    >>> teacher = tf.random.normal([8, 16])
    >>> student = tf.random.normal([8, 4])
    >>> rkd_loss(teacher, student).shape
    TensorShape([])
    """
    return (distance_weight * rkd_distance_loss(teacher, student, delta=delta)
            + angle_weight * rkd_angle_loss(teacher, student, delta=delta))


# --------------------------------------------------------------------------------------------
# Loss classes
# --------------------------------------------------------------------------------------------


def _optional_float(value, name):
    # Loss configs must be JSON: the classes take scalar hyper-parameters only (a per-row sigma
    # only makes sense for one batch; call `snd_loss` directly for that).
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a scalar number or None, got {value!r}.") from None


@keras.saving.register_keras_serializable(package="tfembed")
class SNDLoss(EmbeddingLoss):
    """Loss class of `snd_loss` (``y_true`` = teacher embeddings, ``y_pred`` = student's).

    Args:
      sigma: teacher kernel width (a scalar).
      student_sigma: student kernel width (a scalar), defaults to ``sigma``.
      perplexity: optional target perplexity; calibrates ``sigma`` per row and batch.
      num_iters: bisection steps of the perplexity calibration.
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    >>> student.compile(optimizer="adam", loss=SNDLoss(sigma=0.5))
    >>> student.fit(images, teacher_embeddings, batch_size=128)
    """

    def __init__(self, sigma=1.0, student_sigma=None, perplexity=None, num_iters=64,
                 name="snd_loss", reduction="sum_over_batch_size", dtype=None):
        if perplexity is not None and student_sigma is not None:
            raise ValueError("SNDLoss: pass either `perplexity` or `student_sigma`, not both.")
        perplexity = _optional_float(perplexity, "perplexity")
        _check_perplexity(perplexity)
        super().__init__(snd_loss, name=name, reduction=reduction, dtype=dtype,
                         sigma=float(sigma),
                         student_sigma=_optional_float(student_sigma, "student_sigma"),
                         perplexity=perplexity, num_iters=int(num_iters))


@keras.saving.register_keras_serializable(package="tfembed")
class RKDDistanceLoss(EmbeddingLoss):
    """Loss class of `rkd_distance_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      delta: Huber threshold.
      name, reduction, dtype: as for `SNDLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=RKDDistanceLoss())
    """

    def __init__(self, delta=1.0, name="rkd_distance_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(rkd_distance_loss, name=name, reduction=reduction, dtype=dtype,
                         delta=float(delta))


@keras.saving.register_keras_serializable(package="tfembed")
class RKDAngleLoss(EmbeddingLoss):
    """Loss class of `rkd_angle_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      delta: Huber threshold.
      name, reduction, dtype: as for `SNDLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=RKDAngleLoss())
    """

    def __init__(self, delta=1.0, name="rkd_angle_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(rkd_angle_loss, name=name, reduction=reduction, dtype=dtype,
                         delta=float(delta))


@keras.saving.register_keras_serializable(package="tfembed")
class RKDLoss(EmbeddingLoss):
    """Loss class of `rkd_loss` (RKD-DA; ``y_true`` = teacher, ``y_pred`` = student).

    Args:
      distance_weight, angle_weight, delta: see `rkd_loss`.
      name, reduction, dtype: as for `SNDLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=RKDLoss(distance_weight=1.0, angle_weight=2.0))
    """

    def __init__(self, distance_weight=1.0, angle_weight=2.0, delta=1.0, name="rkd_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(rkd_loss, name=name, reduction=reduction, dtype=dtype,
                         distance_weight=float(distance_weight),
                         angle_weight=float(angle_weight), delta=float(delta))
