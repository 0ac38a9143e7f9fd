"""`class_weights=balanced` weights the loss by inverse class frequency in the training split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marinelife.config import TrainConfig
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import DatasetLayout, Sample
from marinelife.fit.stage_data import StageDataBuilder

COUNTS = {"a": 12, "b": 6, "c": 3, "d": 1}


def _builder(class_weights: str) -> StageDataBuilder:
    def samples(counts):
        return [Sample(Path(f"/x/{c}/{i}.jpg"), c) for c, n in counts.items() for i in range(n)]

    layout = DatasetLayout(
        root=Path("/x"),
        classes=list(COUNTS),
        splits={"train": samples(COUNTS), "val": samples(dict.fromkeys(COUNTS, 1))},
    )
    config = TrainConfig(class_weights=class_weights)
    preprocess = PreprocessConfig(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    # Weights come from the training labels only: no model or device is touched.
    return StageDataBuilder(config=config, model=None, layout=layout, preprocess=preprocess,
                            device=None)  # fmt: skip


def test_balanced_weights_are_inverse_frequencies():
    weights = _builder("balanced").class_weights().numpy()
    counts = np.array(list(COUNTS.values()), dtype=float)
    # scikit-learn's "balanced": n_samples / (n_classes * count).
    np.testing.assert_allclose(weights, counts.sum() / (len(counts) * counts), rtol=1e-6)
    np.testing.assert_allclose(weights * counts, np.full(4, counts.sum() / 4), rtol=1e-6)
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.repeat(np.arange(4), counts.astype(int))
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_no_weights_by_default():
    assert _builder("none").class_weights() is None


@pytest.mark.parametrize("value", ["balanced", "none"])
def test_the_setting_is_recorded_for_the_report(value, tmp_path):
    from marinelife.config import load_config, save_config

    save_config(TrainConfig(class_weights=value, sampler="balanced"), tmp_path / "config.yaml")
    loaded = load_config(tmp_path / "config.yaml")
    assert (loaded.class_weights, loaded.sampler) == (value, "balanced")
