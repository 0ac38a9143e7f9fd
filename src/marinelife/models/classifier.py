"""Backbone + head, and the freezing rules of two-stage training.

Frozen BatchNorm layers are kept in eval mode by :meth:`Classifier.train` (it calls
:func:`frozen_batchnorm_eval` after switching modes), so a frozen backbone's running statistics
never drift while the head or the top blocks train — Keras' ``trainable=False`` behaviour, the
pitfall the original two-stage script relied on. :func:`set_trainable` re-applies the modes itself,
so the order of ``set_trainable`` and ``model.train()`` does not matter.

Fine-tuning fraction: :func:`set_trainable` unfreezes the last ``ceil(fraction × len(blocks))``
entries of :func:`backbone_blocks`, whose final entry is the conv/norm after the blocks. For
``mobilenetv2_100`` (19 entries: stem, 17 inverted residual blocks, conv_head+bn2) 0.35 unfreezes
the last 7: ``blocks[4][1]`` … ``blocks[6][0]`` (Keras ``block_11`` … ``block_16``) plus
``conv_head/bn2`` (Keras ``Conv_1``). The original Keras script froze layers ``[:100]`` of 154, i.e.
fine-tuned the top 35 % of layers, starting around ``block_11``: the same depth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from marinelife.config import TrainConfig
from marinelife.errors import MarineLifeError
from marinelife.models.backbones import create_backbone
from marinelife.models.blocks import backbone_blocks, pooled_feature_size
from marinelife.models.heads import build_head

__all__ = [
    "Classifier",
    "backbone_blocks",
    "build_classifier",
    "frozen_batchnorm_eval",
    "head_l2_parameters",
    "head_parameters",
    "set_trainable",
]


class Classifier(nn.Module):
    """``head(backbone(x))``; the backbone returns pooled features of size ``num_features``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_features: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = num_features

    def forward_features_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if mode:
            frozen_batchnorm_eval(self)
        return self

    @property
    def weights_info(self) -> dict:
        """Where the backbone's weights came from and their digest (see ``create_backbone``)."""
        return dict(getattr(self.backbone, "marinelife_weights", {}))


def build_classifier(
    config: TrainConfig, num_classes: int, *, pretrained: bool | None = None
) -> Classifier:
    """The configured backbone and head; ``pretrained=None`` follows ``config.pretrained``.

    Dropout lives in the head only (the backbone gets ``drop_rate=0``) so pooled features are
    deterministic and can be cached.
    """
    backbone = create_backbone(
        config.architecture,
        pretrained=config.pretrained if pretrained is None else pretrained,
        weights=config.weights,
        input_size=config.input_size,
    )
    num_features = pooled_feature_size(backbone)
    return Classifier(backbone, configured_head(config, num_features, num_classes), num_features)


def configured_head(config: TrainConfig, num_features: int, num_classes: int) -> nn.Module:
    """The head ``config`` describes, on ``num_features`` pooled features."""
    return build_head(
        config.head,
        num_features,
        num_classes,
        hidden=list(config.head_hidden),
        dropout=list(config.head_dropout),
        norm_first=config.head_norm_first,
        drop_rate=config.drop_rate,
    )


def set_trainable(
    model: Classifier, *, train_backbone_fraction: float, train_batchnorm: bool = True
) -> int:
    """Freeze all but the head and the top ``train_backbone_fraction`` of the backbone's blocks.

    0.0: head only; 1.0: everything. ``train_batchnorm=False`` keeps every backbone BatchNorm
    frozen (and so in eval mode, with its ImageNet statistics) even inside unfrozen blocks, which
    is what keeps small-data fine-tuning from wrecking a good head. Returns the number of
    trainable parameters.
    """
    fraction = float(train_backbone_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise MarineLifeError(f"train_backbone_fraction={fraction} must be within [0, 1]")
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    if fraction >= 1.0:
        model.backbone.requires_grad_(True)
    elif fraction > 0.0:
        # An ensemble tunes the same top share of every member, not just the last member's.
        for part in getattr(model.backbone, "members", [model.backbone]):
            blocks = backbone_blocks(part)
            # The epsilon keeps float noise (0.3 * 10 = 3.0000000000000004) from adding a block.
            count = max(1, math.ceil(fraction * len(blocks) - 1e-9))
            for block in blocks[-count:]:
                block.requires_grad_(True)
    if not train_batchnorm:
        for module in model.backbone.modules():
            if isinstance(module, _BatchNorm):
                module.requires_grad_(False)
    model.train(model.training)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def frozen_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen into eval mode.

    Call after ``model.train()`` (:class:`Classifier` does so itself). BatchNorm without affine
    parameters is left alone: nothing says whether it belongs to a frozen part.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    return list(model.head.parameters())


def head_l2_parameters(model: Classifier) -> list[nn.Parameter]:
    """The head's Linear weights: Keras' ``kernel_regularizer`` covered kernels, not biases/BN."""
    return [m.weight for m in model.head.modules() if isinstance(m, nn.Linear)]


def trainable_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    return (p for p in model.parameters() if p.requires_grad)
