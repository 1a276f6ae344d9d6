"""Divergence loss of attention-based ensembles (Kim et al. 2018, ``002_*`` Eq. 9).

The M learners of an ABE-M ensemble embed the same image; the divergence loss pushes their
embeddings of that image at least ``√m`` apart, so the learners attend to different parts:

    L_div = mean over samples x of  Σ_{p<q} max(0, m − ‖B_p(x) − B_q(x)‖²)

Squared distances: no square root, so coinciding learners (distance 0) have a finite gradient.
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = ["divergence_loss", "DivergenceLoss"]


def divergence_loss(learner_embeddings, margin=1.0):
    """ABE's divergence loss (DESIGN §4).

    Args:
      learner_embeddings: ``[M, batch, dim]``: learner m's embedding of every image of the batch.
      margin: ``m`` in ``max(0, m − ‖B_p(x) − B_q(x)‖²)``.

    Returns:
      A float32 scalar: the mean over the batch of the sum over learner pairs ``p < q`` (0 for
      fewer than two learners or an empty batch).

    Example:

    >>> x = tf.constant([[[0.0, 0.0]], [[0.6, 0.0]]])   # 2 learners, 1 image
    >>> round(float(divergence_loss(x, margin=1.0)), 4)   # 1 − 0.36
    0.64
    """
    x = ops.as_float32(learner_embeddings)
    if x.shape.rank is not None and x.shape.rank != 3:
        raise ValueError(f"divergence_loss: learner_embeddings must be [M, batch, dim], got "
                         f"shape {x.shape}.")
    # [M, M, B] squared distances between learners, per sample.
    diff = x[:, None] - x[None, :]
    d2 = tf.reduce_sum(tf.square(diff), axis=-1)
    m = tf.shape(x)[0]
    upper = tf.linalg.band_part(tf.ones([m, m]), 0, -1) - tf.eye(m)   # p < q
    hinge = tf.maximum(tf.cast(margin, tf.float32) - d2, 0.0) * upper[:, :, None]
    per_sample = tf.reduce_sum(hinge, axis=[0, 1])
    return tf.math.divide_no_nan(tf.reduce_sum(per_sample),
                                 tf.cast(tf.size(per_sample), tf.float32))


def _divergence_of_prediction(y_true, y_pred, margin):
    del y_true  # the loss has no target: it compares the learners with each other
    return divergence_loss(y_pred, margin)


@keras.saving.register_keras_serializable(package="tfembed")
class DivergenceLoss(EmbeddingLoss):
    """Loss class of `divergence_loss`; ``y_pred`` = ``[M, batch, dim]`` (``y_true`` unused).

    Args:
      margin: the margin ``m``.
      name, reduction, dtype: as for the other tfembed losses.
    """

    def __init__(self, margin=1.0, name="divergence_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(_divergence_of_prediction, name=name, reduction=reduction,
                         dtype=dtype, margin=margin)
