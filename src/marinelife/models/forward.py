"""The forward loop every evaluation shares: a model over a loader → targets and logits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from marinelife.logutil import progress
from marinelife.models.precision import autocast


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable,
    *,
    device: torch.device,
    desc: str = "eval",
    channels_last: bool = False,
    show_progress: bool = True,
    amp: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, float32 logits) for every sample of ``loader``, model in eval mode.

    ``model`` may also be a plain function of a batch (an ONNX Runtime session, see
    :mod:`.onnx_forward`). Local to this process: under DDP each rank predicts its own shard.
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    all_targets, all_logits = [], []
    for inputs, targets in progress(loader, total=len(loader), desc=desc, enabled=show_progress):
        inputs = inputs.to(device)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            all_logits.append(model(inputs).float().cpu())
        all_targets.append(torch.as_tensor(targets).cpu())
    if not all_logits:  # an empty shard (fewer items than ranks)
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return torch.cat(all_targets).numpy(), torch.cat(all_logits).numpy()


def predict_probs(model, loader: Iterable, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """(targets, softmax probabilities): :func:`predict_logits` (same options), softmaxed."""
    targets, logits = predict_logits(model, loader, **options)
    return targets, torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def merge_views(logits: np.ndarray) -> np.ndarray:
    """``[N, views, K]`` logits of test-time-augmentation views → ``[N, K]``: their mean.

    The one TTA rule (evaluate ``--tta`` and ``predict --tta``): averaging logits, not
    probabilities, keeps a logit that the rejection scores (max softmax, energy) read the same
    way as a single view's.
    """
    return np.asarray(logits, dtype=np.float32).mean(axis=1)
