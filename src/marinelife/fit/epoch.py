"""One epoch of training — the loop every stage and path shares — and the validation metrics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score

from marinelife.errors import MarineLifeError
from marinelife.fit import distributed
from marinelife.logutil import progress
from marinelife.models.precision import autocast

log = logging.getLogger(__name__)


@dataclass
class NonFiniteCounter:
    """Steps skipped because the loss or a gradient was NaN/inf (``skip_nonfinite``)."""

    skipped: int = 0


def _all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether every element of every tensor is finite, in one reduction per tensor.

    A sum is non-finite exactly when some element is inf or NaN: accumulated in float64, no
    finite float32 values can overflow it. That reads each tensor once and allocates nothing the
    size of a tensor, where ``isfinite(t).all()`` per tensor took ~40 % of a cached head epoch.
    (MPS has no float64: a float32 sum there could only overflow for weights near 1e38/n.)
    """
    present = [t.detach() for t in tensors if t is not None]
    if not present:
        return True
    dtype = torch.float32 if present[0].device.type == "mps" else torch.float64
    return bool(torch.isfinite(torch.stack([t.sum(dtype=dtype) for t in present])).all())


def _grads_finite(parameters: list[torch.nn.Parameter]) -> bool:
    return _all_finite(p.grad for p in parameters)


def _params_finite(parameters: list[torch.nn.Parameter]) -> bool:
    return _all_finite(parameters)


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: torch.nn.Module,
    *,
    device: torch.device,
    epoch_label: str,
    global_step: int,
    skip_nonfinite: bool = False,
    nonfinite: NonFiniteCounter | None = None,
    prepare_model=None,
    channels_last: bool = False,
    show_progress: bool = True,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; return mean loss and accuracy over the samples seen.

    ``prepare_model`` runs after ``model.train()`` (it puts frozen BatchNorm back into eval).
    ``amp`` is none|bf16|fp16; fp16 takes a ``scaler``. Under DDP ``model`` is the DDP wrapper:
    the loss and accuracy returned are over every rank's samples, and skip/stop decisions are
    taken by all ranks together.
    """
    model.train()
    if prepare_model is not None:
        prepare_model(model)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = progress(loader, total=len(loader), desc=epoch_label, enabled=show_progress)
    for step, (inputs, targets) in enumerate(bar):
        inputs = inputs.to(device, non_blocking=True)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(inputs)
        loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        # Agreed by all ranks before backward: one rank skipping DDP's gradient all-reduce would
        # leave the others waiting forever. (One process: just this loss.)
        finite = distributed.all_true(bool(torch.isfinite(loss)))
        if finite and scaler is not None:
            # fp16: inf/NaN gradients are the scaler's business (it skips the step and lowers
            # the scale); they are expected now and then, not a failure.
            scaler.scale(loss).backward()
        elif finite:
            loss.backward()
            # After DDP's all-reduce every rank holds the same gradients, so all agree here.
            finite = _grads_finite(params)
        if not finite:
            where = f"{epoch_label}, step {step + 1} (global step {global_step + step + 1})"
            if not skip_nonfinite:
                raise MarineLifeError(
                    f"non-finite loss or gradient at {where}; nothing non-finite was saved",
                    fix="lower the learning rate, or --set skip_nonfinite=true to skip such steps",
                )
            if nonfinite is not None:
                nonfinite.skipped += 1
            log.warning("skipping non-finite step at %s", where)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            continue
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if not _params_finite(params):
            # Finite gradients can still overflow the weights (a huge lr). Skipping cannot undo
            # an update (every later step would be skipped), so stop here with the step named.
            raise MarineLifeError(
                f"the update at {epoch_label}, step {step + 1} (global step "
                f"{global_step + step + 1}) made the weights non-finite; nothing non-finite "
                "was saved",
                fix="lower the learning rate",
            )
        scheduler.step()
        batch = targets.numel()
        total_loss += float(loss.detach()) * batch
        correct += int((logits.detach().argmax(1) == targets).sum())
        seen += batch
        bar.set_postfix(
            loss=f"{total_loss / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}"
        )
    elapsed = time.perf_counter() - start
    total_loss, correct, seen = distributed.sum_over_ranks([total_loss, correct, seen])
    return {
        "loss": total_loss / max(seen, 1) if seen else math.nan,
        "acc": correct / max(seen, 1),
        "samples_per_s": seen / max(elapsed, 1e-9),
        "steps": len(loader),
    }


def validation_metrics(
    targets: np.ndarray, probs: np.ndarray, label_smoothing: float = 0.0
) -> dict[str, float]:
    """Loss (with the training's label smoothing), accuracy and macro-F1 from probabilities."""
    logp = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    loss = torch.nn.functional.nll_loss(logp, torch.from_numpy(targets))
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(dim=1).mean()
    preds = probs.argmax(axis=1)
    return {
        "loss": float(loss),
        "acc": float((preds == targets).mean()),
        "f1": float(f1_score(targets, preds, average="macro", zero_division=0)),
    }
