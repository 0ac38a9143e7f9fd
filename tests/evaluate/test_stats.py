"""Bootstrap intervals, exact McNemar and calibration error on hand-made prediction vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from marinelife.evaluate.compare import holm
from marinelife.evaluate.stats import (
    accuracy_interval,
    batched_macro_f1,
    calibration,
    macro_f1_interval,
    mcnemar_exact,
)


def test_mcnemar_exact_known_values():
    # 9 images only A gets right, 1 only B: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024.
    a = np.array([1] * 9 + [0] + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 9 + [1] + [1] * 5 + [0] * 3, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (9, 1)
    assert result.p_value == pytest.approx(22 / 1024)
    assert result.p_value == pytest.approx(stats.binomtest(1, 10, 0.5).pvalue)
    # Symmetric, and concordant images carry no information.
    assert mcnemar_exact(b, a).p_value == pytest.approx(result.p_value)
    assert mcnemar_exact(a, a).p_value == 1.0
    balanced = mcnemar_exact([1, 1, 0, 0], [0, 0, 1, 1])
    assert balanced.p_value == pytest.approx(1.0)


def test_mcnemar_rejects_unpaired_vectors():
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1, 0, 1])


def test_batched_macro_f1_matches_sklearn_on_every_resample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, (20, 40))
    p = np.where(rng.random((20, 40)) < 0.6, y, rng.integers(0, 6, (20, 40)))
    ours = batched_macro_f1(y, p, 6)
    expected = [f1_score(a, b, labels=range(6), average="macro", zero_division=0)
                for a, b in zip(y, p)]  # fmt: skip
    np.testing.assert_allclose(ours, expected)
    # Along another axis, too (scipy's bootstrap passes axis=-1 but the function is general).
    np.testing.assert_allclose(batched_macro_f1(y.T, p.T, 6, axis=0), expected)


def test_accuracy_interval_matches_the_binomial_width():
    # 300 images, 240 right: the percentile interval is close to the normal approximation.
    y = np.zeros(300, dtype=int)
    pred = np.r_[np.zeros(240, int), np.ones(60, int)]
    ci = accuracy_interval(y, pred, resamples=4000)
    assert ci.value == pytest.approx(0.8)
    half = 1.96 * math.sqrt(0.8 * 0.2 / 300)
    assert ci.low == pytest.approx(0.8 - half, abs=0.012)
    assert ci.high == pytest.approx(0.8 + half, abs=0.012)
    assert ci == accuracy_interval(y, pred, resamples=4000)  # seeded: reproducible


def test_interval_edge_cases():
    perfect = accuracy_interval(np.arange(20) % 3, np.arange(20) % 3)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    single = accuracy_interval([1], [1])
    assert single.value == 1.0 and math.isnan(single.low)
    y = np.arange(60) % 4
    f1 = macro_f1_interval(y, np.where(np.arange(60) % 5 == 0, 0, y), 4)
    assert f1.low <= f1.value <= f1.high


def test_calibration_known_values():
    # Two bins used: conf 0.95 (4 images, 2 right) and 0.55 (2 images, both right).
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 0, 0, 1, 1])
    cal = calibration(conf, correct, bins=10)
    expected = (4 * abs(0.5 - 0.95) + 2 * abs(1.0 - 0.55)) / 6
    assert cal.ece == pytest.approx(expected)
    assert cal.counts.sum() == 6 and cal.counts[9] == 4 and cal.counts[5] == 2
    assert calibration(np.ones(5), np.ones(5)).ece == pytest.approx(0.0)
    assert calibration(np.array([0.0, 1.0]), np.array([0, 1])).counts.sum() == 2


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
