"""Per-epoch scalars mirrored to TensorBoard event files (when the optional package is present)."""

from __future__ import annotations

import pytest

from marinelife.fit import tracking


def test_log_epoch_writes_readable_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [{"stage": "head", "epoch": k, "train_loss": 1.0 / k, "val_loss": 1.2 / k,
             "train_acc": 0.5, "val_acc": 0.4 + 0.1 * k, "val_f1": 0.3, "lr": 1e-3,
             "seconds": 1.5, "train_samples_per_s": 99.0} for k in (1, 2)]  # fmt: skip
    for row in rows:
        assert tracking.log_epoch(tmp_path, row)
    tracking.close(tmp_path)
    events = EventAccumulator(str(tmp_path / tracking.TENSORBOARD_DIR))
    events.Reload()
    assert set(tracking.SCALARS.values()) <= set(events.Tags()["scalars"])
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([0.5, 0.6])


def test_log_epoch_is_a_no_op_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    assert tracking.log_epoch(tmp_path, {"epoch": 1, "val_acc": 0.5}) is False
    assert not (tmp_path / tracking.TENSORBOARD_DIR).exists()
