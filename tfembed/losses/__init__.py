"""tfembed losses: each a pure function plus a thin serializable ``keras.losses.Loss`` class.

Metric losses take ``(labels, embeddings)``; distillation losses take ``(teacher, student)``.
``get_loss(name, **hyper)`` builds a Loss object from a recipe's ``loss`` key.
"""

from tfembed.losses.base import EmbeddingLoss, GlobalBatchLoss
from tfembed.losses.distill import (
    RKDAngleLoss,
    RKDDistanceLoss,
    RKDLoss,
    SNDLoss,
    calibrate_sigma,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    snd_loss,
)
from tfembed.losses.divergence import DivergenceLoss, divergence_loss
from tfembed.losses.features import (
    AttentionTransferLoss,
    HintLoss,
    attention_map,
    attention_transfer_loss,
    hint_loss,
)
from tfembed.losses.metric import (
    ArcFaceHead,
    BinomialDevianceLoss,
    ContrastiveLoss,
    ContrastivePairsLoss,
    MarginLoss,
    MultiSimilarityLoss,
    ProxyNCAHead,
    TripletBatchHardLoss,
    TripletDistanceWeightedLoss,
    TripletHardLoss,
    TripletSemiHardLoss,
    arcface_loss,
    binomial_deviance_loss,
    contrastive_loss,
    contrastive_pairs_loss,
    distance_weighted_negatives,
    margin_loss,
    multi_similarity_loss,
    proxy_nca_loss,
    triplet_batch_hard_loss,
    triplet_distance_weighted_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)
from tfembed.losses.rank import (
    DARKRANK_SOFT_MAX_BATCH,
    DarkRankHardLoss,
    DarkRankSoftLoss,
    LargeMarginSoftmaxHead,
    VerificationHead,
    contrastive_verification_loss,
    darkrank_hard_loss,
    darkrank_soft_loss,
    large_margin_softmax_loss,
    verification_loss,
)
from tfembed.losses.relation import RelationLoss, relation_loss
from tfembed.losses.teacher import (
    AbsoluteTeacherLoss,
    DirectMatchLoss,
    HintonKDLoss,
    RelativeTeacherLoss,
    absolute_teacher_loss,
    direct_match_loss,
    hinton_kd_loss,
    relative_teacher_loss,
)

# Recipe name → Loss class. Losses with learned weights (proxy-NCA, ArcFace) are layers
# (ProxyNCAHead, ArcFaceHead), not Loss objects: the model's optimizer must see their weights.
LOSSES = {
    "triplet_semihard": TripletSemiHardLoss,
    "triplet_hard": TripletHardLoss,
    "triplet_batch_hard": TripletBatchHardLoss,
    "multi_similarity": MultiSimilarityLoss,
    "contrastive": ContrastiveLoss,
    "contrastive_pairs": ContrastivePairsLoss,
    "triplet_distance_weighted": TripletDistanceWeightedLoss,
    "margin": MarginLoss,
    "binomial_deviance": BinomialDevianceLoss,
    # distillation losses: (teacher, student)
    "snd": SNDLoss,
    "rkd": RKDLoss,
    "rkd_distance": RKDDistanceLoss,
    "rkd_angle": RKDAngleLoss,
    "absolute_teacher": AbsoluteTeacherLoss,
    "relative_teacher": RelativeTeacherLoss,
    "direct_match": DirectMatchLoss,
    "darkrank_hard": DarkRankHardLoss,
    "darkrank_soft": DarkRankSoftLoss,
    "hinton_kd": HintonKDLoss,
    "hint": HintLoss,
    "attention_transfer": AttentionTransferLoss,
    # ensembles and cohorts: learner embeddings [M, B, D] (ABE); a peer's embeddings (DM²)
    "divergence": DivergenceLoss,
    "relation": RelationLoss,
}


def register_loss(name, cls):
    """Makes ``cls`` available to recipes as ``loss=name``."""
    LOSSES[name] = cls
    return cls


def get_loss(name, **kwargs):
    """A Loss object from its recipe name and hyper-parameters.

    Example:
      >>> get_loss("triplet_semihard", margin=0.2)
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)
