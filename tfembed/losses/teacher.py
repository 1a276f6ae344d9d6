"""Teacher → student losses on final outputs: absolute / relative teacher, direct match, Hinton KD.

Every loss is a pure function ``fn(teacher, student, **hyper_parameters) -> scalar`` plus a thin
``keras.losses.Loss`` class (``model.compile(loss=...)`` passes ``y_true`` = the teacher's output
and ``y_pred`` = the student's output).

Conventions shared by all functions:

- Both inputs are cast to float32. The teacher is a frozen target: it goes through
  ``tf.stop_gradient``, so even a teacher computed inside the tape receives no gradient.
- All work is vectorised over the batch, and the batch size may be unknown (``None``).
- Distances come from ``tfembed.ops``, whose square roots are clamped, so identical rows (the
  same image twice in a batch, or a student that already equals its teacher) keep finite
  gradients.
- Pairwise losses average over the ``B (B - 1)`` ordered pairs ``i != j`` — except direct
  match, which sums over each query's candidates and averages over the queries (004 Eq. 8,
  DESIGN §4); a batch with no such pair gives 0, never NaN.
- The absolute and relative teachers take ``aggregation="mean"`` (DESIGN §4, the default: a mean
  over rows / ordered pairs) or ``"frobenius"`` (a Frobenius norm over the whole batch; for the
  relative teacher this is how the authors' public code, yulu0724/EmbeddingDistillation, reduces
  Eq. 5, see `relative_teacher_loss`).

References: ``001_*`` Yu et al. (absolute Eq. 4, relative Eq. 5-6), ``004_*`` Chen et al.
(DarkRank: Hinton KD Eq. 7, direct match Eq. 8).
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
    "AGGREGATIONS",
    "absolute_teacher_loss",
    "relative_teacher_loss",
    "direct_match_loss",
    "hinton_kd_loss",
    "AbsoluteTeacherLoss",
    "RelativeTeacherLoss",
    "DirectMatchLoss",
    "HintonKDLoss",
]


def _prepare(teacher, student, what, same_dim):
    """Casts to float32, freezes the teacher and checks the static shapes that must agree."""
    teacher = tf.stop_gradient(ops.as_float32(teacher))
    student = ops.as_float32(student)
    if teacher.shape.rank is not None and teacher.shape.rank != 2:
        raise ValueError(f"{what}: teacher must be [batch, dim], got shape {teacher.shape}.")
    if student.shape.rank is not None and student.shape.rank != 2:
        raise ValueError(f"{what}: student must be [batch, dim], got shape {student.shape}.")
    # Only dims known on both sides can disagree; None is checked when the ops run.
    axes = (0, 1) if same_dim else (0,)
    if teacher.shape.rank is not None and student.shape.rank is not None:
        for axis in axes:
            t, s = teacher.shape[axis], student.shape[axis]
            if t is not None and s is not None and t != s:
                kind = "batch sizes" if axis == 0 else "last dimensions"
                raise ValueError(
                    f"{what}: teacher and student {kind} differ (teacher shape {teacher.shape}, "
                    f"student shape {student.shape})."
                )
    return teacher, student


#: Batch reductions of the absolute / relative teacher losses (``aggregation=``).
AGGREGATIONS = ("mean", "frobenius")


def _check_aggregation(aggregation, what):
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"{what}: aggregation must be one of {', '.join(AGGREGATIONS)}, got "
                         f"{aggregation!r}")


def _mean_off_diagonal(values):
    """Mean of a ``[B, B]`` matrix over ``i != j`` (0 when ``B < 2``)."""
    n = tf.shape(values)[0]
    mask = ops.off_diagonal_mask(n, tf.float32)
    count = tf.cast(n * (n - 1), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), count)


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


def absolute_teacher_loss(teacher, student, aggregation="mean"):
    """Absolute teacher loss (Yu et al. 2019, Eq. 4): mean over ``i`` of ``‖s_i − t_i‖``.

    The student is pulled onto the teacher's exact coordinates, so both embeddings must have the
    same dimension (a projection to the teacher's size is the model's job).

    ``aggregation`` (Eq. 4 is written per image and says "Frobenius norm" of
    ``F^S(x_i) − F^T(x_i)``, which for one embedding is its Euclidean norm):

    * ``"mean"`` (default, DESIGN §4): mean over ``i`` of ``‖s_i − t_i‖``. This is also the
      authors' reduction: their public code (yulu0724/EmbeddingDistillation,
      ``train_distillation.py``, ``-Ttype absolute``) averages ``F.pairwise_distance`` of the
      batch's rows, i.e. unsquared per-row norms, with λ = 1 on CUB (``run_main.sh``). 001's
      recipes therefore keep it.
    * ``"frobenius"``: ``‖S − T‖_F = sqrt(Σ_i ‖s_i − t_i‖²)`` of the ``[batch, dim]`` matrices
      (Eq. 4 read with ``F`` the batch's embedding matrix; not what the authors' code does).

    Args:
      teacher: ``[batch, dim]`` teacher embeddings (frozen targets).
      student: ``[batch, dim]`` student embeddings.
      aggregation: ``"mean"`` or ``"frobenius"`` (see above).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: for an unknown ``aggregation``, or when static shapes show different batch
        sizes or dimensions.

    Example:

    >>> t = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    >>> float(absolute_teacher_loss(t, t + [[0.0, 3.0], [4.0, 0.0]]))
    3.5
    >>> float(absolute_teacher_loss(t, t + [[0.0, 3.0], [4.0, 0.0]], aggregation="frobenius"))
    5.0
    """
    _check_aggregation(aggregation, "absolute_teacher_loss")
    teacher, student = _prepare(teacher, student, "absolute_teacher_loss", same_dim=True)
    squared = tf.reduce_sum(tf.square(student - teacher), axis=1)
    if aggregation == "frobenius":
        # One root of the batch's sum: safe_sqrt gives a zero (not NaN) gradient at a perfect
        # match.
        return ops.safe_sqrt(tf.reduce_sum(squared))
    # safe_sqrt: a student already equal to its teacher must still get a finite (zero) gradient.
    dist = ops.safe_sqrt(squared)
    return tf.math.divide_no_nan(tf.reduce_sum(dist), tf.cast(tf.size(dist), tf.float32))


def relative_teacher_loss(teacher, student, aggregation="mean"):
    """Relative teacher loss (Yu et al. 2019, Eq. 5-6).

    Only distances are matched, so the student is free up to a rigid motion (translation,
    rotation, reflection), and its dimension may differ from the teacher's. With
    ``D^S_ij = ‖s_i − s_j‖`` and ``D^T_ij = ‖t_i − t_j‖`` (Euclidean, not squared):

    * ``aggregation="mean"`` (default, DESIGN §4): mean over ordered pairs ``i != j`` of
      ``|D^S_ij − D^T_ij|``.
    * ``aggregation="frobenius"``: ``‖D^S − D^T‖_F = sqrt(Σ_{i != j} (D^S_ij − D^T_ij)²)``, the
      authors' reduction. Their public code (yulu0724/EmbeddingDistillation,
      ``train_distillation.py``, ``-Ttype relative``) takes ``torch.norm(dis - dis_T, p=2)`` of
      the two ``[B, B]`` distance matrices that ``losses/triplet.py`` returns: a 2-norm of the
      whole flattened matrix, both triangles (each unordered pair counted twice), distances
      unsquared, and no division by the batch size. Their diagonal holds ``sqrt(1e-12)`` on
      both sides, so it adds nothing; here it is masked. They use λ = 0.3 (CUB), 0.1 (Cars),
      1.0 (SOP) with it (``run_main.sh``). Being a root of a sum, it grows like the batch size
      ``B`` where the mean does not: at ``B = 32`` it is ~``sqrt(B (B - 1)) ≈ 31`` times the mean
      for evenly spread errors.

    Paper 001 writes Eq. 5 for one pair and is silent on the reduction; the authors' code is the
    tie-breaker (DESIGN §6), so 001's recipes use ``"frobenius"``.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen targets).
      student: ``[batch, dim_s]`` student embeddings.
      aggregation: ``"mean"`` or ``"frobenius"`` (see above).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: for an unknown ``aggregation``, or when static shapes show different batch
        sizes.

    Example:

    >>> t = tf.constant([[0.0, 0.0], [3.0, 4.0]])
    >>> s = tf.constant([[0.0, 0.0], [6.0, 8.0]])
    >>> float(relative_teacher_loss(t, s))
    5.0
    >>> round(float(relative_teacher_loss(t, s, aggregation="frobenius")), 4)  # sqrt(2·25)
    7.0711
    """
    _check_aggregation(aggregation, "relative_teacher_loss")
    teacher, student = _prepare(teacher, student, "relative_teacher_loss", same_dim=False)
    d_t = ops.pairwise_distances(teacher)
    d_s = ops.pairwise_distances(student)
    if aggregation == "frobenius":
        mask = ops.off_diagonal_mask(tf.shape(d_s)[0], tf.float32)
        # The outer root meets 0 when the student matches every distance: safe_sqrt keeps that
        # gradient zero instead of NaN.
        return ops.safe_sqrt(tf.reduce_sum(tf.square(d_s - d_t) * mask))
    return _mean_off_diagonal(tf.abs(d_s - d_t))


def direct_match_loss(teacher, student):
    """Direct match of squared distances (Chen et al. 2018, Eq. 8; the DarkRank baseline).

    Eq. 8 with every row a query, as in the DarkRank lists: for query ``i`` the loss is the
    *sum* over its candidates ``j != i`` of ``(‖s_i − s_j‖² − ‖t_i − t_j‖²)²``, and the batch's
    loss is the mean over the queries (DESIGN §4), i.e. ``(1/B) Σ_{i != j} (…)²``. The sum over
    candidates is how 004 writes Eq. 8 (``Σ_{i=2}^{n}``), and it keeps the loss on the scale of
    DarkRank's listwise losses, which also sum over a query's list. No square root is taken, so
    gradients are smooth even for identical rows.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen targets).
      student: ``[batch, dim_s]`` student embeddings.

    Returns:
      A float32 scalar (0 for a batch of fewer than 2 rows).

    Raises:
      ValueError: when static shapes show different batch sizes.

    Example:

    >>> t = tf.constant([[0.0], [1.0], [2.0]])
    >>> s = tf.constant([[0.0], [2.0], [4.0]])
    >>> float(direct_match_loss(t, s))  # (2·(3² + 12² + 3²)) / 3 queries
    108.0
    """
    teacher, student = _prepare(teacher, student, "direct_match_loss", same_dim=False)
    d2_t = ops.pairwise_squared_distances(teacher)
    d2_s = ops.pairwise_squared_distances(student)
    n = tf.shape(student)[0]
    mask = ops.off_diagonal_mask(n, tf.float32)
    per_query = tf.reduce_sum(tf.square(d2_s - d2_t) * mask, axis=1)
    return tf.math.divide_no_nan(tf.reduce_sum(per_query), tf.cast(n, tf.float32))


def hinton_kd_loss(teacher_logits, student_logits, temperature=4.0):
    """Knowledge distillation with softened softmax targets (Hinton et al. 2014).

    ``T² · mean_i KL(softmax(t_i / T) ‖ softmax(s_i / T))``. The ``T²`` factor keeps the gradient
    magnitude independent of the temperature (the soft-target gradients scale as ``1/T²``), which
    is the loss weight DarkRank uses (Eq. 7 with weight ``4²`` at ``T = 4``).

    Args:
      teacher_logits: ``[batch, num_classes]`` pre-softmax teacher activations (frozen targets).
      student_logits: ``[batch, num_classes]`` pre-softmax student activations.
      temperature: the softmax temperature ``T`` (> 0).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: for a non-positive temperature, or when static shapes disagree.

    Example:

    >>> logits = tf.constant([[1.0, 2.0, 3.0]])
    >>> float(hinton_kd_loss(logits, logits))
    0.0
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"hinton_kd_loss: temperature must be > 0, got {temperature}.")
    teacher, student = _prepare(teacher_logits, student_logits, "hinton_kd_loss", same_dim=True)
    t = tf.cast(temperature, tf.float32)
    # log_softmax on both sides: KL needs log p_t − log p_s, and subtracting two log-softmaxes is
    # stable where a log of a softmax would underflow to log(0).
    log_p_t = tf.nn.log_softmax(teacher / t, axis=-1)
    log_p_s = tf.nn.log_softmax(student / t, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    mean_kl = tf.math.divide_no_nan(tf.reduce_sum(kl), tf.cast(tf.size(kl), tf.float32))
    return tf.square(t) * mean_kl


# --------------------------------------------------------------------------------------------
# Keras Loss classes
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfembed")
class AbsoluteTeacherLoss(EmbeddingLoss):
    """Loss class of `absolute_teacher_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      aggregation: ``"mean"`` (default) or ``"frobenius"``, as in `absolute_teacher_loss`
        (serialized by ``get_config``; Keras' own ``reduction`` below is a different thing).
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    >>> student.compile(optimizer="adam", loss=AbsoluteTeacherLoss())
    >>> student.fit(images, teacher.predict(images))
    """

    def __init__(self, aggregation="mean", name="absolute_teacher_loss",
                 reduction="sum_over_batch_size", dtype=None):
        _check_aggregation(aggregation, "AbsoluteTeacherLoss")
        super().__init__(absolute_teacher_loss, name=name, reduction=reduction, dtype=dtype,
                         aggregation=aggregation)


@keras.saving.register_keras_serializable(package="tfembed")
class RelativeTeacherLoss(EmbeddingLoss):
    """Loss class of `relative_teacher_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      aggregation: ``"mean"`` (default, DESIGN §4) or ``"frobenius"`` (the authors' code), as
        in `relative_teacher_loss`; serialized by ``get_config``.
      name, reduction, dtype: as for `AbsoluteTeacherLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=RelativeTeacherLoss(aggregation="frobenius"))
    """

    def __init__(self, aggregation="mean", name="relative_teacher_loss",
                 reduction="sum_over_batch_size", dtype=None):
        _check_aggregation(aggregation, "RelativeTeacherLoss")
        super().__init__(relative_teacher_loss, name=name, reduction=reduction, dtype=dtype,
                         aggregation=aggregation)


@keras.saving.register_keras_serializable(package="tfembed")
class DirectMatchLoss(EmbeddingLoss):
    """Loss class of `direct_match_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      name, reduction, dtype: as for `AbsoluteTeacherLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=DirectMatchLoss())
    """

    def __init__(self, name="direct_match_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(direct_match_loss, name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfembed")
class HintonKDLoss(EmbeddingLoss):
    """Loss class of `hinton_kd_loss` (``y_true`` = teacher logits, ``y_pred`` = student logits).

    Args:
      temperature: the softmax temperature ``T``.
      name, reduction, dtype: as for `AbsoluteTeacherLoss`.

    Example:

    >>> classifier.compile(optimizer="adam", loss=HintonKDLoss(temperature=4.0))
    """

    def __init__(self, temperature=4.0, name="hinton_kd_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(hinton_kd_loss, name=name, reduction=reduction, dtype=dtype,
                         temperature=temperature)
