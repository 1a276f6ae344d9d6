"""Relation transfer of diversified mutual metric learning (Park et al., ``003_*`` Eq. 1-2).

Each member of a cohort matches its Euclidean distance matrix to its peers' on the same batch:

    L_DM²(Ψ, Ψ') = (1/N²) Σ_ij (Ψ_ij − Ψ'_ij)²          (Eq. 1)

and, with several peers, the mean over them (Eq. 2). The peers' matrices are targets: no
gradient flows into a peer from another member's loss.
"""

import keras
import tensorflow as tf

from tfembed import ops
from tfembed.losses.base import EmbeddingLoss

__all__ = ["relation_loss", "RelationLoss"]


def _relation(psi, peer):
    diff = psi - ops.pairwise_distances(tf.stop_gradient(ops.as_float32(peer)))
    return tf.math.divide_no_nan(tf.reduce_sum(tf.square(diff)), tf.cast(tf.size(diff),
                                                                           tf.float32))


def relation_loss(embeddings, peer_embeddings):
    """DM²'s relation loss (DESIGN §4).

    Args:
      embeddings: ``[N, dim]``: this member's embeddings of the batch.
      peer_embeddings: ``[N, dim_p]`` of one peer, or a list of them (the mean over peers,
        Eq. 2). Peers may have a different embedding size: only distances are compared.

    Returns:
      A float32 scalar ``(1/N²) Σ_ij (Ψ_ij − Ψ'_ij)²`` (averaged over peers).

    Example:

    >>> a = tf.constant([[0.0, 0.0], [3.0, 4.0]])
    >>> float(relation_loss(a, a * 2.0))   # distances 5 vs 10 in the two off-diagonal cells
    12.5
    """
    psi = ops.pairwise_distances(ops.as_float32(embeddings))
    peers = peer_embeddings if isinstance(peer_embeddings, (list, tuple)) else [peer_embeddings]
    if not peers:
        raise ValueError("relation_loss needs at least one peer")
    return tf.add_n([_relation(psi, p) for p in peers]) / float(len(peers))


def _relation_to_target(peer, own):
    return relation_loss(own, peer)


@keras.saving.register_keras_serializable(package="tfembed")
class RelationLoss(EmbeddingLoss):
    """Loss class of `relation_loss` (``y_true`` = the peer's embeddings, ``y_pred`` = own).

    Args:
      name, reduction, dtype: as for the other tfembed losses.
    """

    def __init__(self, name="relation_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(_relation_to_target, name=name, reduction=reduction, dtype=dtype)
