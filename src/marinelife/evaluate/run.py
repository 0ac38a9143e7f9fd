"""Evaluate a model on a split and write ``<split>_metrics.json``; shared by train and evaluate."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import Sample, scan_dataset
from marinelife.data.transforms import build_eval_transform
from marinelife.errors import MarineLifeError
from marinelife.evaluate.metrics import classification_metrics, report_text
from marinelife.train.checkpoint import atomic_write_text
from marinelife.train.engine import predict_probs

log = logging.getLogger(__name__)


def predict_samples(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    class_to_index: dict[str, int],
    preprocess: PreprocessConfig,
    *,
    device: torch.device,
    batch_size: int = 32,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    dataset = ImageSampleDataset(
        samples,
        class_to_index,
        build_eval_transform(preprocess),
        draft_size=preprocess.draft_size,
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    channels_last = device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return predict_probs(model, loader, device=device, desc="test", channels_last=channels_last)


def write_split_metrics(
    run_dir: Path,
    split: str,
    samples: Sequence[Sample],
    targets: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metrics = classification_metrics(targets, probs, classes)
    metrics["split"] = split
    metrics["classification_report"] = report_text(targets, probs.argmax(1), classes)
    metrics["files"] = [str(s.path) for s in samples]
    metrics["predictions"] = probs.argmax(1).tolist()
    metrics["targets"] = targets.tolist()
    metrics["confidence"] = [round(float(p), 6) for p in probs.max(1)]
    if extra:
        metrics.update(extra)
    text = json.dumps(metrics, indent=1, ensure_ascii=False)
    atomic_write_text(run_dir / f"{split}_metrics.json", text + "\n")
    return metrics


def print_summary(metrics: dict[str, Any], split: str) -> None:
    print(metrics["classification_report"])
    print(
        f"{split} accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
        f"({metrics['num_samples']} images)"
    )


def run_evaluate(run: Path, data: Path, *, split: str = "test") -> dict[str, Any]:
    from marinelife.infer.bundle import load_bundle

    model, info = load_bundle(run)
    layout = scan_dataset(data)
    layout.require_splits(split)
    if list(layout.classes) != list(info.classes):
        raise MarineLifeError(
            f"classes differ from the model's ({len(layout.classes)} vs {len(info.classes)})",
            path=data,
            fix="evaluate on a dataset with the classes the model was trained on",
        )
    samples = layout.samples(split)
    targets, probs = predict_samples(
        model, samples, layout.class_to_index, info.preprocess, device=torch.device("cpu")
    )
    run_dir = run if Path(run).is_dir() else Path(run).parent
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, info.classes)
    print_summary(metrics, split)
    return metrics
