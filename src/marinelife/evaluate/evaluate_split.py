"""Evaluate a model on a split and write its metrics; shared by train and evaluate.

The training data's result is the run's own ``<split>_metrics.json``; an evaluation of any other
dataset goes to ``RUN/evals/<dataset>-<split>.json`` (:mod:`marinelife.evaluate.evals`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Sequence
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
from marinelife.evaluate.evals import Destination, dataset_record, destination, training_data
from marinelife.evaluate.metrics import classification_metrics, report_text
from marinelife.evaluate.tta import check_tta_mode, predict_samples_tta
from marinelife.fileio import atomic_write_text
from marinelife.logutil import plural
from marinelife.models.forward import predict_probs
from marinelife.models.onnx_forward import fast_cpu_forward

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
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probabilities); on a CPU a large split runs in ONNX Runtime (``forward``: one
    the caller already built), else the model in PyTorch."""
    if forward is None and device.type == "cpu":
        forward = fast_cpu_forward(model, preprocess.input_size, items=len(samples))
    dataset = ImageSampleDataset(
        samples,
        class_to_index,
        build_eval_transform(preprocess),
        draft_size=preprocess.draft_size,
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    if forward is not None:
        return predict_probs(forward, loader, device=device, desc="test")
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
    *,
    present: Sequence[int] | None = None,
    path: Path | None = None,
    probs_path: Path | None = None,
) -> dict[str, Any]:
    """Metrics (+ the probability matrix) to ``path``, by default the run's own
    ``<split>_metrics.json``; ``present``: the class indices the data has (default: all)."""
    metrics = classification_metrics(targets, probs, classes, present)
    metrics["split"] = split
    metrics["classification_report"] = report_text(targets, probs.argmax(1), classes, present)
    # Absolute, so the report's gallery still finds the photos when run from another folder.
    metrics["files"] = [os.path.abspath(s.path) for s in samples]
    metrics["predictions"] = probs.argmax(1).tolist()
    metrics["targets"] = targets.tolist()
    metrics["confidence"] = [round(float(p), 6) for p in probs.max(1)]
    if extra:
        metrics.update(extra)
    text = json.dumps(metrics, indent=1, ensure_ascii=False)
    path = path or run_dir / f"{split}_metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text + "\n")
    save_probs(probs_path or run_dir / f"{split}_probs.npy", probs)
    return metrics


def save_probs(path: Path, probs: np.ndarray) -> None:
    """The full probability matrix beside the metrics (the JSON keeps only the top confidence)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, np.asarray(probs, dtype=np.float32))
    os.replace(tmp, path)


def tta_summary(
    targets: np.ndarray,
    plain: np.ndarray,
    tta: np.ndarray,
    classes: list[str],
    mode: str,
    present: Sequence[int] | None = None,
) -> dict[str, Any]:
    """TTA's headline numbers, and whether it differs from the plain result (exact McNemar)."""
    from marinelife.evaluate.stats import mcnemar_exact

    metrics = classification_metrics(targets, tta, classes, present)
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
        f"({plural(metrics['num_samples'], 'image')})"
    )
    absent = metrics.get("absent_classes")
    if absent:
        kept = len(metrics["classes"]) - len(absent)
        print(
            f"absent: {len(absent)} of the model's {len(metrics['classes'])} classes have no "
            f"images in this data ({name_list(absent)}); macro-F1 averages the {kept} present"
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


def name_list(names: Sequence[str], limit: int = 8) -> str:
    """``a, b, c`` or ``a, b, … and 5 more``: every name up to ``limit``."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def model_class_index(
    dataset_classes: Sequence[str], model_classes: Sequence[str], data: Path
) -> tuple[dict[str, int], list[str]]:
    """Dataset class name → the model's output index, and the model's classes the data lacks.

    A subset of the model's classes is fine (each is scored against the model's full output);
    a class the model does not know cannot be scored at all, so it is an error naming it.
    """
    import difflib

    known = list(model_classes)
    extra = [c for c in dataset_classes if c not in known]
    if extra:
        hints = []
        for name in extra:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or [
                k for k in known if k.lower() == name.lower()
            ]
            hints.append(f"{name} (the model has {close[0]!r})" if close else name)
        raise MarineLifeError(
            f"{len(extra)} of the dataset's classes {'is' if len(extra) == 1 else 'are'} unknown "
            f"to the model: {name_list(hints)}",
            path=data,
            fix=f"rename or remove {'that folder' if len(extra) == 1 else 'those folders'}; the "
            f"model knows {plural(len(known), 'class')} ({name_list(known)})",
        )
    absent = [c for c in known if c not in dataset_classes]
    return {c: known.index(c) for c in dataset_classes}, absent


def _say_where(dest: Destination, run_dir: Path, data: Path) -> None:
    """Name the file written and whether it replaced anything (only ever its own earlier copy)."""
    replaced = " (replaced the earlier result of this dataset and split)" if dest.replaces else ""
    if dest.own:
        print(f"wrote {dest.metrics} (+ {dest.probs.name}){replaced}")
        return
    if dest.note:
        log.warning("%s", dest.note)
    own = run_dir / "test_metrics.json"
    kept = f"; {own} (the training data's result) is unchanged" if own.is_file() else ""
    print(f"{data} is not the run's training data: wrote {dest.metrics} (+ "
          f"{dest.probs.name}){replaced}{kept}")  # fmt: skip


def run_evaluate(
    run: Path,
    data: Path,
    *,
    split: str = "test",
    tta: str = "none",
    report: bool = True,
    by_group: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on ``data``'s ``split``. The training data's result is the run's own
    ``<split>_metrics.json``; any other dataset goes to ``RUN/evals/`` (see evaluate/evals.py).

    ``by_group``: a group source (:mod:`marinelife.data.groups`): accuracy and macro-F1 per
    site/group with intervals, stored as ``by_group`` in the metrics JSON."""
    from marinelife.data.groups import parse_group_source, resolve_groups
    from marinelife.models.bundle import load_bundle

    check_tta_mode(tta)
    source = parse_group_source(by_group) if by_group is not None else None
    model, info = load_bundle(run)
    layout = scan_dataset(data)
    layout.require_splits(split)
    class_to_index, absent = model_class_index(layout.classes, info.classes, Path(data))
    present = sorted(class_to_index.values()) if absent else None
    listed = layout.samples(split)
    samples = evaluable_samples(listed, info.preprocess)
    # Before the forward pass, so a bad CSV or pattern fails at once.
    names = resolve_groups(source, layout.root, [s.path for s in samples]) if source else None
    targets, probs = predict_samples(
        model, samples, class_to_index, info.preprocess, device=torch.device("cpu")
    )
    run_dir = run if Path(run).is_dir() else Path(run).parent
    record = dataset_record(layout.root, listed)
    dest = destination(run_dir, record, split)
    extra = _training_extra(dest.metrics) if dest.own else {}
    extra.update(record)
    extra["evaluated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if absent:
        extra["absent_classes"] = absent
    if tta != "none":
        _, tta_probs = predict_samples_tta(
            model, samples, class_to_index, info.preprocess, mode=tta,
            device=torch.device("cpu"),
        )  # fmt: skip
        extra["tta"] = tta_summary(targets, probs, tta_probs, info.classes, tta, present)
    if source is not None:
        from marinelife.evaluate.by_group import by_group_summary

        extra["by_group"] = by_group_summary(source, layout.root, [s.path for s in samples],
                                             targets, probs.argmax(1), groups=names)  # fmt: skip
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, info.classes, extra,
                                  present=present, path=dest.metrics,
                                  probs_path=dest.probs)  # fmt: skip
    print_summary(metrics, split)
    if source is not None:
        from marinelife.evaluate.by_group import by_group_lines

        print("\n".join(by_group_lines(metrics["by_group"])))
    _say_where(dest, run_dir, Path(data))
    if not report:
        return metrics
    from marinelife.evaluate.report import build_report

    if dest.own:
        # The report shows the test split; evaluating val only rebuilds it when there is no test.
        if split == "test" or not (run_dir / "test_metrics.json").is_file():
            print(f"report: {build_report(run_dir, data=layout)}")
    else:
        # The other dataset gets a section of its own; the dataset section stays the training
        # data's (when it is still there), so the page never mixes the two up.
        trained_on = training_data(run_dir)
        shown = trained_on if trained_on is not None and trained_on.is_dir() else None
        print(f"report: {build_report(run_dir, data=shown)}")
    return metrics
