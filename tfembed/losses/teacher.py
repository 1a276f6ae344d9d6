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
- Pairwise losses average over the ``B (B - 1)`` ordered pairs ``i != j``; a batch with no such
  pair gives 0, never NaN.

References: ``001_*`` Yu et al. (absolute Eq. 4, relative Eq. 5-6), ``004_*`` Chen et al.
(DarkRank: Hinton KD Eq. 7, direct match Eq. 8).
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
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


def _mean_off_diagonal(values):
    """Mean of a ``[B, B]`` matrix over ``i != j`` (0 when ``B < 2``)."""
    n = tf.shape(values)[0]
    mask = ops.off_diagonal_mask(n, tf.float32)
    count = tf.cast(n * (n - 1), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), count)


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


def absolute_teacher_loss(teacher, student):
    """Absolute teacher loss (Yu et al. 2019, Eq. 4): mean over ``i`` of ``‖s_i − t_i‖``.

    The student is pulled onto the teacher's exact coordinates, so both embeddings must have the
    same dimension (a projection to the teacher's size is the model's job).

    Args:
      teacher: ``[batch, dim]`` teacher embeddings (frozen targets).
      student: ``[batch, dim]`` student embeddings.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when static shapes show different batch sizes or dimensions.

    Example:

    >>> t = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    >>> float(absolute_teacher_loss(t, t + [[0.0, 3.0], [4.0, 0.0]]))
    3.5
    """
    teacher, student = _prepare(teacher, student, "absolute_teacher_loss", same_dim=True)
    # safe_sqrt: a student already equal to its teacher must still get a finite (zero) gradient.
    dist = ops.safe_sqrt(tf.reduce_sum(tf.square(student - teacher), axis=1))
    return tf.math.divide_no_nan(tf.reduce_sum(dist), tf.cast(tf.size(dist), tf.float32))


def relative_teacher_loss(teacher, student):
    """Relative teacher loss (Yu et al. 2019, Eq. 5-6).

    Mean over ordered pairs ``i != j`` of ``|‖s_i − s_j‖ − ‖t_i − t_j‖|``. Only distances are
    matched, so the student is free up to a rigid motion (translation, rotation, reflection),
    and its dimension may differ from the teacher's.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen targets).
      student: ``[batch, dim_s]`` student embeddings.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when static shapes show different batch sizes.

    Example:

    >>> t = tf.constant([[0.0, 0.0], [3.0, 4.0]])
    >>> s = tf.constant([[0.0, 0.0], [6.0, 8.0]])
    >>> float(relative_teacher_loss(t, s))
    5.0
    """
    teacher, student = _prepare(teacher, student, "relative_teacher_loss", same_dim=False)
    d_t = ops.pairwise_distances(teacher)
    d_s = ops.pairwise_distances(student)
    return _mean_off_diagonal(tf.abs(d_s - d_t))


def direct_match_loss(teacher, student):
    """Direct match of squared distances (Chen et al. 2018, Eq. 8; the DarkRank baseline).

    Mean over ordered pairs ``i != j`` of ``(‖s_i − s_j‖² − ‖t_i − t_j‖²)²``. Every row plays the
    query once, as in the DarkRank lists. No square root is taken, so gradients are smooth even
    for identical rows.

    Args:
      teacher: ``[batch, dim_t]`` teacher embeddings (frozen targets).
      student: ``[batch, dim_s]`` student embeddings.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when static shapes show different batch sizes.

    Example:

    >>> t = tf.constant([[0.0], [1.0]])
    >>> s = tf.constant([[0.0], [2.0]])
    >>> float(direct_match_loss(t, s))
    9.0
    """
    teacher, student = _prepare(teacher, student, "direct_match_loss", same_dim=False)
    d2_t = ops.pairwise_squared_distances(teacher)
    d2_s = ops.pairwise_squared_distances(student)
    return _mean_off_diagonal(tf.square(d2_s - d2_t))


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
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    >>> student.compile(optimizer="adam", loss=AbsoluteTeacherLoss())
    >>> student.fit(images, teacher.predict(images))
    """

    def __init__(self, name="absolute_teacher_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(absolute_teacher_loss, name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfembed")
class RelativeTeacherLoss(EmbeddingLoss):
    """Loss class of `relative_teacher_loss` (``y_true`` = teacher, ``y_pred`` = student).

    Args:
      name, reduction, dtype: as for `AbsoluteTeacherLoss`.

    Example:

    >>> student.compile(optimizer="adam", loss=RelativeTeacherLoss())
    """

    def __init__(self, name="relative_teacher_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(relative_teacher_loss, name=name, reduction=reduction, dtype=dtype)


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
