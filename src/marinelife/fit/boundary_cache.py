"""Cache at the freeze boundary for the fine-tuning stage.

When only the top blocks of a backbone train (and its BatchNorm stays frozen), everything below
the first trainable block is a fixed function of the input view. So the activations entering that
block are computed once per cached view, and each training step runs only the trainable top and
the head. The split is checked against the full forward pass before it is used; architectures it
cannot split exactly, or activations over the memory budget, fall back to the full forward pass.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from marinelife.models import Classifier, backbone_blocks

log = logging.getLogger(__name__)


class TopModel(nn.Module):
    """The trainable top of the backbone plus the head; parameters are shared with the model."""

    def __init__(self, blocks: list[nn.Module], finish: Callable, extra: list[nn.Module], head):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.extra = nn.ModuleList(extra)  # registered so .train()/.eval() reach them
        self.head = head
        self._finish = finish

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary activations → the backbone's pooled features (what the head sees)."""
        for block in self.blocks:
            x = block(x)
        return self._finish(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


class BackboneSplit:
    """``bottom(x)`` → boundary activations; ``top`` maps them to logits."""

    def __init__(self, bottom: Callable, top: TopModel, bottom_modules: list[nn.Module]):
        self.bottom = bottom
        self.top = top
        self.bottom_modules = bottom_modules
        self.activation_shape: tuple[int, ...] = ()
        self.megabytes = 0.0  # of the boundary cache for the run's training and val views

    def bottom_sha256(self) -> str:
        """Hash of the frozen part's weights and statistics: part of the cache key."""
        digest = hashlib.sha256()
        for module in self.bottom_modules:
            for name, tensor in module.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def _first_trainable(model: Classifier, fraction: float) -> int:
    """Index into ``backbone_blocks`` of the first block :func:`set_trainable` unfreezes."""
    blocks = backbone_blocks(model.backbone)
    count = max(1, math.ceil(fraction * len(blocks) - 1e-9))
    return len(blocks) - count


def _split_efficientnet(model: Classifier, first: int) -> BackboneSplit | None:
    bb = model.backbone
    inner = [block for stage in bb.blocks for block in stage]
    # backbone_blocks = [stem, *inner, top]: inner block i sits at index i + 1.
    k = min(max(first - 1, 0), len(inner))
    lower, upper = inner[:k], inner[k:]

    def bottom(x: torch.Tensor) -> torch.Tensor:
        x = bb.bn1(bb.conv_stem(x))
        for block in lower:
            x = block(x)
        return x

    def finish(x: torch.Tensor) -> torch.Tensor:
        return bb.forward_head(bb.bn2(bb.conv_head(x)), pre_logits=True)

    extra = [bb.conv_head, bb.bn2, bb.global_pool]
    top = TopModel(upper, finish, extra, model.head)
    return BackboneSplit(bottom, top, [bb.conv_stem, bb.bn1, *lower])


def _split_resnet(model: Classifier, first: int) -> BackboneSplit | None:
    bb = model.backbone
    inner = [
        block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(bb, name)
    ]
    k = min(max(first - 1, 0), len(inner))
    lower, upper = inner[:k], inner[k:]

    def bottom(x: torch.Tensor) -> torch.Tensor:
        x = bb.maxpool(bb.act1(bb.bn1(bb.conv1(x))))
        for block in lower:
            x = block(x)
        return x

    def finish(x: torch.Tensor) -> torch.Tensor:
        return bb.forward_head(x, pre_logits=True)

    top = TopModel(upper, finish, [bb.global_pool], model.head)
    return BackboneSplit(bottom, top, [bb.conv1, bb.bn1, *lower])


def split_for_finetune(model: Classifier, fraction: float, input_size: int) -> BackboneSplit | None:
    """A verified bottom/top split at the freeze boundary, or None when it cannot be exact."""
    names = dict(model.backbone.named_children())
    if {"conv_stem", "bn1", "blocks", "conv_head", "bn2"} <= names.keys():
        split = _split_efficientnet(model, _first_trainable(model, fraction))
    elif {"conv1", "bn1", "act1", "maxpool", "layer4"} <= names.keys():
        split = _split_resnet(model, _first_trainable(model, fraction))
    else:
        log.info("boundary cache: no exact split for this architecture; full forward pass")
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = torch.randn(2, 3, input_size, input_size)
            expected = model(x)
            got = split.top(split.bottom(x))
            split.activation_shape = tuple(split.bottom(x).shape[1:])
        if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
            log.warning("boundary cache: split does not reproduce the model; full forward pass")
            return None
    finally:
        model.train(was_training)
    return split


def split_within_budget(
    model: Classifier, fraction: float, input_size: int, *, items: int, budget_mb: float
) -> BackboneSplit | None:
    """:func:`split_for_finetune`, or None when ``items`` activations exceed ``budget_mb``."""
    split = split_for_finetune(model, fraction, input_size)
    if split is None:
        return None
    split.megabytes = items * math.prod(split.activation_shape) * 4 / 2**20
    if split.megabytes > budget_mb:
        log.info(
            "boundary cache would need %.0f MB (> boundary_cache_mb=%d); full forward pass",
            split.megabytes,
            budget_mb,
        )
        return None
    return split
