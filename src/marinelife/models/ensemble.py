"""Several backbones side by side as one: ``"tf_efficientnet_lite0+tf_efficientnet_lite1+..."``.

The ensemble takes one input tensor, prepared by the one preprocessing function at the input
size and data config of its largest member (so predict, serve, evaluate and the ONNX graph keep a
single input), and gives each member the view it was trained for: resized inside the network to
the member's own share of that size (lite0/1/2 at 260 px: 224, 240, 260) and renormalised when
the member's mean/std differ. The members' pooled features are concatenated; a head on top sees
``sum(num_features)`` values. Everything inside is plain tensor arithmetic, so the whole network
exports to one ONNX graph with one branch per member.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marinelife.models.blocks import pooled_feature_size

SEPARATOR = "+"


def is_ensemble(architecture: str) -> bool:
    return SEPARATOR in architecture


def member_names(architecture: str) -> list[str]:
    """The member architectures of ``"a+b+c"`` (one name: itself)."""
    return [name.strip() for name in architecture.split(SEPARATOR)]


def _data_cfg(member: nn.Module) -> dict[str, Any]:
    cfg = getattr(member, "pretrained_cfg", None) or {}
    return {
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    }


class EnsembleBackbone(nn.Module):
    """Members' pooled features, concatenated; each member sees the input at its own size."""

    def __init__(self, members: list[nn.Module], names: list[str] | None = None):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        # The names as written ("convnext_tiny.in12k_ft_in1k"): what member caches key on.
        self.names = list(names) if names else [
            str((getattr(m, "pretrained_cfg", None) or {}).get("architecture", i))
            for i, m in enumerate(members)
        ]  # fmt: skip
        cfgs = [_data_cfg(m) for m in members]
        largest = max(range(len(members)), key=lambda i: cfgs[i]["input_size"][-1])
        own = cfgs[largest]
        # The ensemble's data config is the largest member's: the others are scaled down from it.
        self.pretrained_cfg = dict(getattr(members[largest], "pretrained_cfg", None) or {})
        self.pretrained_cfg.setdefault("input_size", own["input_size"])
        base = own["input_size"][-1]
        self.size_ratios = [cfg["input_size"][-1] / base for cfg in cfgs]
        for i, cfg in enumerate(cfgs):
            # x_member = (x * std_e + mean_e - mean_m) / std_m = x * scale + shift
            scale = torch.tensor(own["std"]) / torch.tensor(cfg["std"])
            shift = (torch.tensor(own["mean"]) - torch.tensor(cfg["mean"])) / torch.tensor(
                cfg["std"]
            )
            self.register_buffer(f"scale{i}", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"shift{i}", shift.view(1, 3, 1, 1), persistent=False)
        # Python flags, not tensor tests: the ONNX export traces no data-dependent branch.
        self.renormalise = [own["mean"] != c["mean"] or own["std"] != c["std"] for c in cfgs]
        self.feature_sizes = [pooled_feature_size(m) for m in members]
        self.num_features = sum(self.feature_sizes)
        self.head_hidden_size = self.num_features

    def member_input(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """What member ``i`` is fed: ``x`` resized to its share of the size and renormalised."""
        if self.renormalise[i]:
            x = x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}")
        height, width = int(x.shape[-2]), int(x.shape[-1])
        ratio = self.size_ratios[i]
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [member(self.member_input(x, i)) for i, member in enumerate(self.members)], dim=1
        )


def ensemble_weights_info(members: list[nn.Module]) -> dict[str, Any]:
    """``marinelife_weights`` of the ensemble: the members' sources and one digest over theirs."""
    infos = [getattr(m, "marinelife_weights", {}) for m in members]
    digest = hashlib.sha256("+".join(i.get("sha256", "") for i in infos).encode()).hexdigest()
    sources = sorted({i.get("source", "?") for i in infos})
    return {
        "source": "+".join(sources),
        "sha256": digest,
        "path": None,
        "members": [dict(i) for i in infos],
    }


__all__ = [
    "SEPARATOR",
    "EnsembleBackbone",
    "ensemble_weights_info",
    "is_ensemble",
    "member_names",
]
