"""Models: the backbone registry, embedders and their layers (trainers live with their method:
``tfembed.distill``, ``tfembed.ensemble``, ``tfembed.cohort``)."""

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
