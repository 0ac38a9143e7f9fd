"""Per-step learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from marinelife.fileio import atomic_write_text
from marinelife.fit import distributed

PLAN_FILE = "plan.json"


class WarmupCosine:
    """Multiplier for ``LambdaLR``: 0→1 over ``warmup_steps``, then cosine 1→``min_ratio``.

    A class (not a lambda) so schedulers pickle into DataLoader workers and checkpoints.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.01):
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps - 1))
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    min_ratio: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total, warmup, min_ratio))


# The recorded curve keeps at most this many points per stage (the figure needs no more).
_CURVE_POINTS = 1000


def recorded_lr_curve(
    lr: float, *, epochs: int, steps_per_epoch: int, warmup_epochs: float, min_ratio: float
) -> dict[str, list[float]]:
    """The per-step LR a stage's scheduler produces, x in epochs: what ``plan.json`` records.

    The last point is the LR after the final step (what ``metrics.csv`` logs for that epoch).
    """
    total = epochs * steps_per_epoch
    schedule = WarmupCosine(total, int(round(warmup_epochs * steps_per_epoch)), min_ratio)
    stride = max(1, math.ceil(total / _CURVE_POINTS))
    steps = list(range(0, total + 1, stride))
    if steps[-1] != total:
        steps.append(total)
    return {
        "epoch": [round(s / steps_per_epoch, 6) for s in steps],
        "lr": [lr * schedule(s) for s in steps],
    }


def record_stage_plan(run_dir: Path, stage: Any, steps_per_epoch: int, config: Any) -> None:
    """Add ``stage`` to ``RUN/plan.json``: what it was set to do, as its loader really sized it.

    The report draws the schedule and the stage summary from this record (with the world size),
    never by re-deriving loader lengths from whatever dataset it is shown later.
    """
    path = Path(run_dir) / PLAN_FILE
    plan = json.loads(path.read_text("utf-8")) if path.is_file() else {"stages": {}}
    plan.update(world_size=distributed.world_size(), batch_size=config.batch_size)
    plan["stages"][stage.name] = {
        **dataclasses.asdict(stage),
        "steps_per_epoch": steps_per_epoch,
        "min_lr_ratio": config.min_lr_ratio,
        "lr_curve": recorded_lr_curve(
            stage.lr,
            epochs=stage.epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=stage.warmup_epochs,
            min_ratio=config.min_lr_ratio,
        ),
    }
    atomic_write_text(path, json.dumps(plan, indent=1))
