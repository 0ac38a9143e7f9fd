"""The stage plan (fastai's ``fine_tune`` idea): a frozen stage, then optionally an unfreeze."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from marinelife.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    lr: float
    backbone_fraction: float  # share of backbone blocks trained; 0 = head only
    monitor: str
    patience: int
    warmup_epochs: float
    train_batchnorm: bool = True


def plan_stages(config: TrainConfig) -> list[Stage]:
    first = Stage(
        name="head" if config.freeze_backbone else "full",
        epochs=config.epochs,
        lr=config.lr,
        backbone_fraction=0.0 if config.freeze_backbone else 1.0,
        monitor=config.monitor,
        patience=config.patience,
        warmup_epochs=config.warmup_epochs,
    )
    stages = [first]
    if config.finetune_epochs > 0:
        stages.append(
            Stage(
                name="finetune",
                epochs=config.finetune_epochs,
                lr=config.finetune_lr,
                backbone_fraction=config.finetune_fraction,
                monitor=config.finetune_monitor,
                patience=config.finetune_patience,
                warmup_epochs=config.finetune_warmup_epochs,
                train_batchnorm=config.finetune_batchnorm,
            )
        )
    return stages


def monitor_improved(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


def build_optimizer(
    trainable: list[tuple[str, torch.nn.Parameter]], config: TrainConfig, lr: float
) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only (not biases or norm scales), as timm does."""
    decay = [p for name, p in trainable if p.ndim > 1]
    no_decay = [p for name, p in trainable if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # torch picks the multi-tensor implementation only on accelerators; on CPU it too saves the
    # per-tensor Python loop (a cached head epoch 1.34 -> 1.10 s).
    return cls(groups, lr=lr, foreach=True)


class RegularizedLoss(torch.nn.Module):
    """Cross-entropy with label smoothing plus a Keras-style L2 penalty on head kernels."""

    def __init__(
        self,
        label_smoothing: float,
        l2: float = 0.0,
        l2_params: list[torch.nn.Parameter] | None = None,
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        self.ce = torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.l2 = l2
        self.l2_params = list(l2_params or [])

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits, targets)
        if self.l2 and self.l2_params:
            loss = loss + self.l2 * sum((p * p).sum() for p in self.l2_params)
        return loss
