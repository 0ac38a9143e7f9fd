"""Classification metrics from labels and probabilities (scikit-learn does the arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    present: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, top-5, per-class precision/recall/F1/support, confusion matrix.

    ``present``: the class indices the evaluated data has (default: all). Macro-F1 averages
    over those only, so a dataset with a subset of the model's classes is not marked down by a
    zero for every class it never had a chance to show.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    averaged = list(present) if present is not None else labels
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    top_k = min(5, len(classes) - 1)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=averaged, average="macro", zero_division=0)
        ),
        f"top{top_k}_accuracy": (
            float(top_k_accuracy_score(y_true, probs, k=top_k, labels=labels))
            if top_k >= 2
            else None
        ),
        "num_samples": int(len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    return metrics


def report_text(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: list[str],
    present: Sequence[int] | None = None,
) -> str:
    labels = list(present) if present is not None else list(range(len(classes)))
    return classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=[classes[i] for i in labels],
        digits=3,
        zero_division=0,
    )


def confused_pairs(matrix: np.ndarray, classes: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: which class is most often mistaken for which."""
    counts = np.asarray(matrix)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:top]
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        support = max(1, int(counts[i].sum()))
        pairs.append(
            {
                "true": classes[i],
                "predicted": classes[j],
                "count": int(off[i, j]),
                "share": float(off[i, j]) / support,
            }
        )
    return pairs
