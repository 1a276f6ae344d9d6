"""Models: backbone registry, embedders, layers and ensembles (distillers: ``tfembed.distill``)."""

from tfembed.models.backbones import (
    BACKBONES,
    BackboneSpec,
    backbone_model,
    backbone_spec,
    build_backbone,
    register_backbone,
)
from tfembed.models.embedder import backbone_spec_of, build_embedder, feature_model, load_embedder
from tfembed.models.layers import GeneralizedMeanPooling2D, Preprocess
from tfembed.models.attention_ensemble import (
    AttentionEnsemble,
    MultiHeadEnsemble,
    build_attention_ensemble,
    build_multihead_ensemble,
)
from tfembed.models.mutual_learning import MutualLearningCohort
