"""Evaluate a model on a split and write ``<split>_metrics.json``; shared by train and evaluate."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from marinelife.data.dataset import ImageSampleDataset, readable_samples
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import Sample, scan_dataset
from marinelife.data.transforms import build_eval_transform
from marinelife.errors import MarineLifeError
from marinelife.evaluate.metrics import classification_metrics, report_text
from marinelife.evaluate.tta import check_tta_mode, predict_samples_tta
from marinelife.fileio import atomic_write_text
from marinelife.models.forward import predict_probs

log = logging.getLogger(__name__)


def evaluable_samples(samples: Sequence[Sample], preprocess: PreprocessConfig) -> list[Sample]:
    """The split's readable images; unreadable ones are named and left out of the metrics."""
    kept, errors = readable_samples(samples, draft_size=preprocess.draft_size)
    for message in errors:
        log.warning("left out of the metrics: %s", message)
    if not kept:
        raise MarineLifeError("no readable images to evaluate", path=samples[0].path.parent)
    return kept


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
    # Absolute, so the report's gallery still finds the photos when run from another folder.
    metrics["files"] = [os.path.abspath(s.path) for s in samples]
    metrics["predictions"] = probs.argmax(1).tolist()
    metrics["targets"] = targets.tolist()
    metrics["confidence"] = [round(float(p), 6) for p in probs.max(1)]
    if extra:
        metrics.update(extra)
    text = json.dumps(metrics, indent=1, ensure_ascii=False)
    atomic_write_text(run_dir / f"{split}_metrics.json", text + "\n")
    save_probs(run_dir / f"{split}_probs.npy", probs)
    return metrics


def save_probs(path: Path, probs: np.ndarray) -> None:
    """The full probability matrix beside the metrics (the JSON keeps only the top confidence)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, np.asarray(probs, dtype=np.float32))
    os.replace(tmp, path)


def tta_summary(
    targets: np.ndarray, plain: np.ndarray, tta: np.ndarray, classes: list[str], mode: str
) -> dict[str, Any]:
    """TTA's headline numbers, and whether it differs from the plain result (exact McNemar)."""
    from marinelife.evaluate.stats import mcnemar_exact

    metrics = classification_metrics(targets, tta, classes)
    test = mcnemar_exact(plain.argmax(1) == targets, tta.argmax(1) == targets)
    summary = {"mode": mode}
    summary.update({k: v for k, v in metrics.items() if k in ("accuracy", "macro_f1")
                    or k.endswith("_accuracy")})  # fmt: skip
    summary.update({
        "changed_predictions": int((plain.argmax(1) != tta.argmax(1)).sum()),
        "mcnemar_vs_plain": {"only_plain": test.only_a, "only_tta": test.only_b,
                             "p_value": test.p_value},
        "predictions": tta.argmax(1).tolist(),
    })  # fmt: skip
    return summary


def print_summary(metrics: dict[str, Any], split: str) -> None:
    print(metrics["classification_report"])
    print(
        f"{split} accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
        f"({metrics['num_samples']} images)"
    )
    tta = metrics.get("tta")
    if tta:
        print(
            f"{split} accuracy {tta['accuracy']:.4f}  macro-F1 {tta['macro_f1']:.4f}  "
            f"with TTA {tta['mode']} ({tta['changed_predictions']} predictions changed, "
            f"McNemar p={tta['mcnemar_vs_plain']['p_value']:.3g} vs plain)"
        )


# Written by `train` and kept when `evaluate` rewrites the metrics of the same split.
_TRAINING_KEYS = ("train_seconds", "best_epoch", "skipped_nonfinite_steps", "feature_cache",
                  "recipe", "architecture", "num_parameters", "train_samples")  # fmt: skip


def _training_extra(path: Path) -> dict[str, Any]:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: old[k] for k in _TRAINING_KEYS if isinstance(old, dict) and k in old}


def run_evaluate(
    run: Path, data: Path, *, split: str = "test", tta: str = "none", report: bool = True
) -> dict[str, Any]:
    from marinelife.models.bundle import load_bundle

    check_tta_mode(tta)
    model, info = load_bundle(run)
    layout = scan_dataset(data)
    layout.require_splits(split)
    if list(layout.classes) != list(info.classes):
        raise MarineLifeError(
            f"classes differ from the model's ({len(layout.classes)} vs {len(info.classes)})",
            path=data,
            fix="evaluate on a dataset with the classes the model was trained on",
        )
    samples = evaluable_samples(layout.samples(split), info.preprocess)
    targets, probs = predict_samples(
        model, samples, layout.class_to_index, info.preprocess, device=torch.device("cpu")
    )
    run_dir = run if Path(run).is_dir() else Path(run).parent
    extra = _training_extra(run_dir / f"{split}_metrics.json")
    if tta != "none":
        _, tta_probs = predict_samples_tta(
            model, samples, layout.class_to_index, info.preprocess, mode=tta,
            device=torch.device("cpu"),
        )  # fmt: skip
        extra["tta"] = tta_summary(targets, probs, tta_probs, info.classes, tta)
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, info.classes, extra)
    print_summary(metrics, split)
    # The report shows the test split; evaluating val only rebuilds it when there is no test.
    if report and (split == "test" or not (run_dir / "test_metrics.json").is_file()):
        from marinelife.evaluate.report import build_report

        print(f"report: {build_report(run_dir, data=layout)}")
    return metrics
