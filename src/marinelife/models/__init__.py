"""timm backbones, classification heads and pretrained-weight resolution (offline included)."""

from marinelife.models.backbones import check_architecture, create_backbone
from marinelife.models.blocks import backbone_blocks, pooled_feature_size
from marinelife.models.classifier import (
    Classifier,
    build_classifier,
    frozen_batchnorm_eval,
    head_l2_parameters,
    head_parameters,
    set_trainable,
)
from marinelife.models.heads import HEAD_KINDS, build_head
from marinelife.models.offline_weights import (
    OFFLINE_PACKAGES,
    cache_root,
    has_offline_weights,
    load_offline_weights,
)
from marinelife.models.weight_files import (
    load_backbone_state,
    read_weights_file,
    state_dict_sha256,
)

__all__ = [
    "HEAD_KINDS",
    "OFFLINE_PACKAGES",
    "Classifier",
    "backbone_blocks",
    "build_classifier",
    "build_head",
    "cache_root",
    "check_architecture",
    "create_backbone",
    "frozen_batchnorm_eval",
    "has_offline_weights",
    "head_l2_parameters",
    "head_parameters",
    "load_backbone_state",
    "load_offline_weights",
    "pooled_feature_size",
    "read_weights_file",
    "set_trainable",
    "state_dict_sha256",
]
