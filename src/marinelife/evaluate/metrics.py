"""Classification metrics from labels and probabilities (scikit-learn does the arithmetic)."""

from __future__ import annotations

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
    y_true: np.ndarray, probs: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, top-5, per-class precision/recall/F1/support, confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    top_k = min(5, len(classes) - 1)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
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


def report_text(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> str:
    return classification_report(
        y_true,
        y_pred,
        labels=list(range(len(classes))),
        target_names=classes,
        digits=3,
        zero_division=0,
    )
