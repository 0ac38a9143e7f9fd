"""Uncertainty of test results: bootstrap confidence intervals, exact McNemar, calibration error.

A test set of a few hundred photos gives an accuracy that is itself uncertain by several points;
these numbers say how much, and whether two models evaluated on the same photos really differ.
SciPy does the statistics (``scipy.stats.bootstrap``, ``scipy.stats.binomtest``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
CALIBRATION_BINS = 15


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def batched_accuracy(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(np.asarray(y_true) == np.asarray(y_pred), axis=axis)


def batched_macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, axis: int = -1
) -> np.ndarray:
    """Macro-F1 over ``num_classes`` labels along ``axis`` for a batch of resamples at once.

    Same definition as scikit-learn's ``f1_score(labels=range(K), average="macro",
    zero_division=0)``: ``2tp / (2tp + fp + fn)``, 0 for a class never seen nor predicted.
    """
    y_true = np.moveaxis(np.asarray(y_true, dtype=np.int64), axis, -1)
    y_pred = np.moveaxis(np.asarray(y_pred, dtype=np.int64), axis, -1)
    batch_shape = y_true.shape[:-1]
    y_true = y_true.reshape(-1, y_true.shape[-1])
    y_pred = y_pred.reshape(-1, y_pred.shape[-1])
    rows = np.arange(len(y_true))[:, None] * num_classes
    size = len(y_true) * num_classes

    def counts(labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        index = (rows + labels)[mask] if mask is not None else (rows + labels).ravel()
        return np.bincount(index, minlength=size).reshape(-1, num_classes)

    tp = counts(y_true, y_true == y_pred)
    denominator = counts(y_true) + counts(y_pred)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    return f1.mean(axis=1).reshape(batch_shape)


def bootstrap_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    statistic: Callable[..., np.ndarray],
    *,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of ``statistic(y_true, y_pred, axis=-1)`` over test images."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    value = float(statistic(y_true, y_pred, axis=-1))
    if len(y_true) < 2:
        return Interval(value, float("nan"), float("nan"))
    result = stats.bootstrap(
        (y_true, y_pred),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        **_rng_argument(seed),
    )
    ci = result.confidence_interval
    return Interval(value, float(ci.low), float(ci.high))


def _rng_argument(seed: int) -> dict[str, np.random.Generator]:
    # SciPy 1.15 renamed `random_state` to `rng`; older releases only know the former.
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def accuracy_interval(y_true, y_pred, **kwargs) -> Interval:
    return bootstrap_interval(y_true, y_pred, batched_accuracy, **kwargs)


def macro_f1_interval(y_true, y_pred, num_classes: int, **kwargs) -> Interval:
    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return batched_macro_f1(a, b, num_classes, axis=axis)

    return bootstrap_interval(y_true, y_pred, statistic, **kwargs)


@dataclass(frozen=True)
class McNemarResult:
    """``only_a``: images A got right and B wrong; ``only_b``: the reverse."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test on paired per-image correctness.

    Only the discordant images carry information: under "no difference" each is equally likely to
    favour either model, so ``only_a ~ Binomial(only_a + only_b, 1/2)``.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in shape: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return McNemarResult(only_a, only_b, min(1.0, p))


@dataclass(frozen=True)
class Calibration:
    """Reliability-diagram bins (equal width on top-1 confidence) and the calibration error."""

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray  # nan for empty bins
    accuracy: np.ndarray  # nan for empty bins
    ece: float


def calibration(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> Calibration:
    """Expected calibration error: bin-size-weighted mean |accuracy − confidence| (Guo et al.)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins as in Guo et al.; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=bins) / counts
        acc = np.bincount(index, weights=correct, minlength=bins) / counts
    total = max(1, len(confidence))
    gaps = np.where(counts > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(conf)), 0.0)
    ece = float(np.sum(gaps * counts) / total)
    return Calibration(edges, counts, conf, acc, ece)
