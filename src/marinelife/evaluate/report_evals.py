"""Report sections for evaluations of other datasets (``RUN/evals/*.json``), one per file.

Each is shown apart from the run's own test result, under the dataset's name and split, with
its own figures in ``figures/evals/`` — so a run evaluated on a second reef never shows that
reef's numbers as if they were the training data's.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.evaluate import figures as fig
from marinelife.evaluate import report_html as rh
from marinelife.evaluate.evals import Evaluation
from marinelife.evaluate.metrics import confused_pairs
from marinelife.evaluate.stats import Interval, accuracy_interval, calibration, macro_f1_interval


def present_indices(metrics: dict[str, Any]) -> list[int]:
    """The classes the evaluated data had (all of them unless ``absent_classes`` says not)."""
    absent = set(metrics.get("absent_classes") or [])
    return [i for i, c in enumerate(metrics["classes"]) if c not in absent]


def macro_f1_ci(metrics: dict[str, Any], targets: np.ndarray, preds: np.ndarray) -> Interval:
    """Macro-F1 with its bootstrap interval, averaged over the classes the data had.

    A class absent from the data has no true positives, so its F1 is 0 in every resample; the
    mean over all K classes times K/P is therefore exactly the mean over the P present ones.
    """
    k = len(metrics["classes"])
    p = len(present_indices(metrics)) or k
    ci = macro_f1_interval(targets, preds, k)
    if p == k:
        return ci
    scale = k / p
    return Interval(ci.value * scale, ci.low * scale, ci.high * scale)


def eval_title(ev: Evaluation) -> str:
    name = Path(ev.data).name or ev.name
    return f"Evaluation on {name} ({ev.split} split)"


def eval_section(ev: Evaluation, out: Path, img: Callable[[Path, str], str]) -> str:
    """The body of one evaluation's section; ``img(path, alt)`` renders a figure."""
    metrics = ev.metrics
    classes = list(metrics["classes"])
    present = present_indices(metrics)
    targets, preds = np.asarray(metrics["targets"]), np.asarray(metrics["predictions"])
    acc = accuracy_interval(targets, preds)
    f1 = macro_f1_ci(metrics, targets, preds)
    ece = calibration(np.asarray(metrics["confidence"]), preds == targets).ece
    out.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(metrics["confusion_matrix"])
    shown = [classes[i] for i in present]
    per_class = metrics["per_class"]
    cm = fig.plot_confusion_matrix(
        matrix, classes, out / f"{ev.name}-confusion_matrix_normalized.png", normalise=True
    )
    bars = fig.plot_per_class_accuracy(
        [per_class[c]["recall"] for c in shown],
        [per_class[c]["support"] for c in shown],
        shown,
        out / f"{ev.name}-per_class_accuracy.png",
    )
    items: list[tuple[str, Any]] = [
        ("dataset", metrics.get("data", "–")),
        ("split", ev.split),
        ("fingerprint", metrics.get("data_fingerprint", "–")),
        ("evaluated", metrics.get("evaluated", "–")),
        ("file", ev.path.name),
    ]
    absent = metrics.get("absent_classes") or []
    if absent:
        items.append(
            (
                "absent classes",
                f"{len(absent)} of the model's {len(classes)} have no images here "
                f"({', '.join(absent)}); macro-F1 averages the {len(present)} present",
            )
        )
    subset = dict(metrics, per_class={c: per_class[c] for c in shown})
    return (
        '<p class="note">Another dataset than the one the run was trained and tested on; the '
        "run's own result is in the section above.</p>"
        + rh.key_value_table(items)
        + rh.headline_table(metrics, acc, f1, ece)
        + img(cm, "confusion matrix normalized")
        + img(bars, "per class accuracy")
        + "<h3>Per-class precision, recall and F1</h3>"
        + rh.per_class_table(subset)
        + "<h3>Most-confused pairs</h3>"
        + rh.pairs_table(confused_pairs(matrix, classes))
        + "<h3>Classification report</h3>"
        + f"<pre>{html.escape(metrics.get('classification_report', ''))}</pre>"
    )
