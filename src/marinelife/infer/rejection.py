""" "None of these": reject predictions whose score falls below a threshold calibrated on val.

Two scores, both "higher = more like the training data":

- ``max_softmax``: the top-1 probability (Hendrycks & Gimpel, 2017);
- ``energy``: ``logsumexp(logits)``, the negative free energy (Liu et al., 2020), which does not
  saturate the way softmax does and usually separates out-of-distribution photos better.

The threshold is the score that keeps a chosen fraction (the true-positive rate, default 95 %) of
the validation images: in-distribution photos are rejected about 5 % of the time, anything scoring
lower than that is reported as ``unknown``. The result is stored in ``model.json``'s
``rejection`` field so predict and serve apply exactly what training calibrated.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.data.scan import DatasetLayout, Sample
from marinelife.errors import ImageDecodeError, MarineLifeError

log = logging.getLogger(__name__)

SCORES = ("max_softmax", "energy")
DEFAULT_TPR = 0.95
UNKNOWN = "unknown"


def rejection_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Both scores for a batch of logits ``(N, C)``; float64 so thresholds compare exactly.

    Plain NumPy rather than scipy.special: the server scores every request on its event loop,
    and for a handful of rows scipy's array-API dispatch costs ~10x the arithmetic.
    """
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    total = np.exp(z - top[:, None]).sum(axis=1)  # the top class contributes exp(0) = 1
    return {"max_softmax": 1.0 / total, "energy": top + np.log(total)}


def threshold_at_tpr(scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """The largest threshold that still accepts (score >= t) at least ``tpr`` of ``scores``."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if scores.size == 0:
        raise MarineLifeError("cannot calibrate rejection on an empty validation split")
    if not 0.0 < tpr <= 1.0:
        raise MarineLifeError(f"rejection TPR must be in (0, 1], got {tpr}")
    # Rejecting floor(n * (1 - tpr)) lowest scores keeps ceil(n * tpr) >= n * tpr of them.
    rejected = int(np.floor(scores.size * (1.0 - tpr) + 1e-9))
    return float(scores[rejected])


def calibrate_from_logits(logits: np.ndarray, tpr: float = DEFAULT_TPR) -> dict[str, Any]:
    """The ``rejection`` entry of model.json from validation logits."""
    scores = rejection_scores(logits)
    accepted = scores["max_softmax"] >= threshold_at_tpr(scores["max_softmax"], tpr)
    return {
        "score": "max_softmax",
        "threshold": threshold_at_tpr(scores["max_softmax"], tpr),
        "energy_threshold": threshold_at_tpr(scores["energy"], tpr),
        "tpr": float(tpr),
        "calibrated_on": "val",
        "num_images": int(len(scores["energy"])),
        "val_accept_rate": float(accepted.mean()),
    }


def validate_rejection(rejection: dict[str, Any], where: str | Path = "model.json") -> None:
    """Refuse a malformed ``rejection`` field instead of silently accepting everything."""
    if not rejection:
        return
    score = rejection.get("score", "max_softmax")
    key = "threshold" if score == "max_softmax" else "energy_threshold"
    value = rejection.get(key)
    ok = score in SCORES and isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not np.isfinite(value):
        raise MarineLifeError(
            f"invalid 'rejection' field (score={score!r}, {key}={value!r})",
            path=where,
            fix="recalibrate with marinelife.infer.rejection.ensure_rejection(run_dir, layout)",
        )


def accept_mask(
    logits: np.ndarray,
    rejection: dict[str, Any] | None,
    scores: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """True where a prediction is kept; everything is kept without a calibrated threshold.

    ``scores``: :func:`rejection_scores` of ``logits`` when the caller already has them.
    """
    logits = np.asarray(logits)
    if not rejection:
        return np.ones(len(logits), dtype=bool)
    score = rejection.get("score", "max_softmax")
    threshold = rejection["threshold"] if score == "max_softmax" else rejection["energy_threshold"]
    return (scores or rejection_scores(logits))[score] >= threshold


def _load(path, preprocess: PreprocessConfig, skip_unreadable: bool) -> torch.Tensor | None:
    try:
        return load_and_preprocess(path, preprocess)
    except ImageDecodeError as exc:
        if not skip_unreadable:
            raise
        log.warning("rejection calibration skips an unreadable image: %s", exc)
        return None


@torch.inference_mode()
def sample_logits(
    model: torch.nn.Module | Callable[[np.ndarray], np.ndarray],
    paths: Sequence[str | Path],
    preprocess: PreprocessConfig,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    skip_unreadable: bool = False,
) -> np.ndarray:
    """Logits for image files, through the one shared preprocessing function.

    ``skip_unreadable`` drops files that cannot be decoded (logged) instead of raising; the rows
    then no longer line up with ``paths``, which is fine for calibration.
    """

    is_module = isinstance(model, torch.nn.Module)
    device = torch.device(device)
    if is_module:
        model.eval()
    chunks = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            loaded = pool.map(lambda p: _load(p, preprocess, skip_unreadable), chunk)
            tensors = [t for t in loaded if t is not None]
            if not tensors:
                continue
            batch = torch.stack(tensors)
            if not is_module:
                chunks.append(np.asarray(model(batch.numpy())))
                continue
            batch = batch.to(device)
            if device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            chunks.append(model(batch).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def calibrate_rejection(
    model: torch.nn.Module | Callable[[np.ndarray], np.ndarray],
    samples: Sequence[Sample | str | Path],
    preprocess: PreprocessConfig,
    tpr: float = DEFAULT_TPR,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Calibrate on validation images; returns the dict to store as ``ModelInfo.rejection``.

    ``model`` is the network (or any callable mapping an NCHW float32 batch to logits).
    """
    paths = [s.path if isinstance(s, Sample) else Path(s) for s in samples]
    logits = sample_logits(
        model, paths, preprocess, device=device, batch_size=batch_size, skip_unreadable=True
    )
    return calibrate_from_logits(logits, tpr)


def require_same_classes(layout: DatasetLayout, classes: Sequence[str]) -> None:
    """A dataset used to check or calibrate a model must have exactly the model's classes."""
    if list(layout.classes) == list(classes):
        return
    extra = sorted(set(layout.classes) - set(classes))
    missing = sorted(set(classes) - set(layout.classes))
    what = f"unknown to the model: {extra[:3]}" if extra else f"missing: {missing[:3]}"
    if not extra and not missing:
        what = "same names in another order"
    raise MarineLifeError(
        f"classes differ from the model's ({what})",
        path=layout.root,
        fix="pass the dataset the model was trained on",
    )


def ensure_rejection(
    run_dir: Path,
    layout: DatasetLayout,
    *,
    model: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    tpr: float = DEFAULT_TPR,
    force: bool = False,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
    val_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Calibrate on ``layout``'s val split and write the result into ``run_dir/model.json``.

    Pass the in-memory ``model`` (best weights restored) to skip reloading the bundle,
    ``forward`` (a function of an NCHW float32 array) to run it another way, or the model's
    ``val_logits`` when they are known (a training run's cached val pass) to read no photo.
    Kept when already calibrated at the same TPR unless ``force``.
    """
    from marinelife.models.bundle import load_bundle, read_model_info, write_model_json

    info, folder = read_model_info(run_dir)
    if info.rejection and info.rejection.get("tpr") == tpr and not force:
        return info.rejection
    require_same_classes(layout, info.classes)
    if val_logits is not None:
        rejection = calibrate_from_logits(val_logits, tpr)
    else:
        if model is None:
            model, _ = load_bundle(run_dir)
        was_training = model.training
        rejection = calibrate_rejection(
            forward or model, layout.samples("val"), info.preprocess, tpr, device=device
        )
        model.train(was_training)
    info.rejection = rejection
    write_model_json(info, folder)
    log.info(
        "rejection: max-softmax threshold %.4f, energy %.3f (TPR %.0f%% on %d val images)",
        rejection["threshold"],
        rejection["energy_threshold"],
        100 * tpr,
        rejection["num_images"],
    )
    return rejection
