"""Teacher → student losses on intermediate feature maps: hint (FitNet) and attention transfer.

Each loss is a pure function ``fn(teacher_features, student_features) -> scalar`` plus a thin
``keras.losses.Loss`` class (``y_true`` = the teacher's features, ``y_pred`` = the student's).

The losses compare tensors of the shapes they are given: a 1×1-conv adapter that maps the
student's channels to the teacher's (hint) or a resize that aligns spatial sizes (attention) is
part of the model, not of the loss, so a shape that does not line up is an error rather than a
silent broadcast.

Conventions: inputs are cast to float32, the teacher goes through ``tf.stop_gradient`` (frozen
target), the batch size may be unknown, and every norm is a clamped square root so that a
student that already equals its teacher still gets a finite (zero) gradient.

Reference: ``001_*`` Yu et al. (hint Eq. 8, attention Eq. 10-11), after Romero et al. (FitNets)
and Zagoruyko & Komodakis (attention transfer).
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = [
    "hint_loss",
    "attention_transfer_loss",
    "attention_map",
    "HintLoss",
    "AttentionTransferLoss",
]

# l2_normalize divides by sqrt(max(sum of squares, eps)): an all-zero attention map (dead ReLUs)
# normalises to zeros with a finite gradient instead of 0/0.
_NORM_EPS = 1e-12


def _batch_mean(values):
    return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32))


def _per_sample_norm(diff):
    """Frobenius norm of each sample of ``diff`` (all non-batch axes), with a safe sqrt."""
    axes = tf.range(1, tf.rank(diff))
    return ops.safe_sqrt(tf.reduce_sum(tf.square(diff), axis=axes))


def hint_loss(teacher_features, student_features):
    """Hint loss (FitNets; Yu et al. 2019, Eq. 8): mean over the batch of ``‖F_s − F_t‖``.

    ``‖·‖`` is the per-sample Frobenius norm over all non-batch axes (not squared, as in Eq. 8).

    Args:
      teacher_features: ``[batch, ...]`` teacher activations (frozen targets), e.g. NHWC maps.
      student_features: student activations of exactly the same shape (after the model's adapter).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: naming both shapes when their static shapes differ.

    Example:

    >>> f_t = tf.zeros([2, 4, 4, 4])
    >>> float(hint_loss(f_t, f_t + 0.5))  # sqrt(4 * 4 * 4 * 0.25)
    4.0
    """
    teacher = tf.stop_gradient(ops.as_float32(teacher_features))
    student = ops.as_float32(student_features)
    if not teacher.shape.is_compatible_with(student.shape):
        raise ValueError(
            f"hint_loss: teacher features {teacher.shape} and student features {student.shape} "
            "must have the same shape; map the student's features to the teacher's shape with an "
            "adapter layer (e.g. a 1x1 convolution) in the model."
        )
    if student.shape.rank is not None and student.shape.rank < 2:
        raise ValueError(f"hint_loss: features must be [batch, ...], got shape {student.shape}.")
    return _batch_mean(_per_sample_norm(student - teacher))


def attention_map(features, size=None):
    """Spatial attention map of NHWC features: ``Σ_c F_c²``, flattened and L2-normalised.

    Args:
      features: ``[batch, height, width, channels]`` activations (any rank >= 3 with channels
        last works: every axis between batch and channels is spatial).
      size: optional ``(height, width)``: the (unnormalised) map of 4-D features is resized to
        it (bilinear, anti-aliased when shrinking) before flattening, so maps of layers with
        different spatial sizes can be compared.

    Returns:
      ``[batch, height * width]`` float32, each row of unit norm (all zeros for an all-zero map).
    """
    features = ops.as_float32(features)
    # |F|² = F²: the absolute value in Eq. 10 is redundant for the squared map.
    att = tf.reduce_sum(tf.square(features), axis=-1)
    if size is not None and tuple(att.shape[1:]) != tuple(size):
        # Resize the map itself (not the features): the map is what the loss compares, and
        # resizing it keeps Σ_c F² exact at the source resolution.
        att = tf.image.resize(att[..., None], tuple(size), antialias=True)[..., 0]
    att = tf.reshape(att, [tf.shape(att)[0], -1])
    return tf.math.l2_normalize(att, axis=1, epsilon=_NORM_EPS)


def attention_transfer_loss(teacher_features, student_features, resize=False):
    """Attention transfer (Yu et al. 2019, Eq. 10-11; Zagoruyko & Komodakis 2017).

    ``A = Σ_c F_c²`` over the channels of NHWC features, flattened and L2-normalised per sample;
    the loss is the mean over the batch of ``‖A_t − A_s‖`` (Euclidean norm, not squared). The
    channel sum removes the channel axis, so teacher and student may have different channel
    counts; their spatial sizes must match.

    Args:
      teacher_features: ``[batch, H, W, C_t]`` teacher activations (frozen targets).
      student_features: ``[batch, H, W, C_s]`` student activations.
      resize: resize the student's attention map to the teacher's spatial size when they differ
        (4-D features with static spatial sizes); by default a mismatch is an error.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: when the static ranks, batch sizes or (without ``resize``) spatial sizes
        differ, or the features are not at least ``[batch, spatial, channels]``.

    Example:

    >>> f_t = tf.random.normal([2, 7, 7, 512])
    >>> f_s = tf.random.normal([2, 7, 7, 64])
    >>> loss = attention_transfer_loss(f_t, f_s)
    """
    teacher = tf.stop_gradient(ops.as_float32(teacher_features))
    student = ops.as_float32(student_features)
    t_shape, s_shape = teacher.shape, student.shape
    for shape, who in ((t_shape, "teacher"), (s_shape, "student")):
        if shape.rank is not None and shape.rank < 3:
            raise ValueError(
                f"attention_transfer_loss: {who} features must be [batch, H, W, C] (channels "
                f"last), got shape {shape}."
            )
    size = None
    if resize:
        if t_shape.rank != 4 or s_shape.rank != 4 or None in t_shape[1:3]:
            raise ValueError(
                "attention_transfer_loss(resize=True) needs 4-D features with a static teacher "
                f"spatial size, got teacher {t_shape} and student {s_shape}.")
        size = tuple(t_shape[1:3])
        s_shape = s_shape[:1].concatenate(size).concatenate(s_shape[3:])
    if t_shape.rank is not None and s_shape.rank is not None:
        if t_shape.rank != s_shape.rank or not t_shape[:-1].is_compatible_with(s_shape[:-1]):
            raise ValueError(
                f"attention_transfer_loss: teacher features {t_shape} and student features "
                f"{s_shape} must agree on batch and spatial sizes (channels may differ); resize "
                "the student's maps in the model."
            )
    diff = attention_map(student, size) - attention_map(teacher)
    return _batch_mean(_per_sample_norm(diff))


# --------------------------------------------------------------------------------------------
# Keras Loss classes
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfembed")
class HintLoss(EmbeddingLoss):
    """Loss class of `hint_loss` (``y_true`` = teacher features, ``y_pred`` = student features).

    Args:
      name: loss name.
      reduction: unused (the function returns the batch's scalar); kept for Keras.
      dtype: computation dtype, float32 by default.

    Example:

    >>> model.compile(optimizer="adam", loss={"embedding": ..., "hint": HintLoss()})
    """

    def __init__(self, name="hint_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(hint_loss, name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfembed")
class AttentionTransferLoss(EmbeddingLoss):
    """Loss class of `attention_transfer_loss` (``y_true`` = teacher, ``y_pred`` = student maps).

    Args:
      resize: resize the student's map to the teacher's spatial size (see the function).
      name, reduction, dtype: as for `HintLoss`.

    Example:

    >>> model.compile(optimizer="adam",
    ...               loss={"embedding": ..., "attention": AttentionTransferLoss()})
    """

    def __init__(self, resize=False, name="attention_transfer_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(attention_transfer_loss, name=name, reduction=reduction, dtype=dtype,
                         resize=bool(resize))
