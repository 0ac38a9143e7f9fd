"""Atomic writes keep the old file when the new write fails; damaged checkpoints are named."""

from __future__ import annotations

import pytest
import torch

from marinelife import fileio
from marinelife.errors import MarineLifeError
from marinelife.fit import checkpoint as ck


def test_failed_write_leaves_previous_weights_intact(tmp_path, monkeypatch):
    path = tmp_path / "best.safetensors"
    fileio.save_weights({"w": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        fileio.save_weights({"w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temp debris


def test_non_finite_weights_are_never_saved(tmp_path):
    with pytest.raises(MarineLifeError, match="NaN"):
        fileio.save_weights({"w": torch.tensor([1.0, float("nan")])}, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_truncated_weights_are_named(tmp_path):
    path = tmp_path / "best.safetensors"
    fileio.save_weights({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(MarineLifeError, match="best.safetensors"):
        fileio.load_weights(path)


def test_garbled_last_ckpt_falls_back_to_previous(tmp_path):
    path = tmp_path / "last.ckpt"
    ck.save_training_state({"epoch": 1, "x": torch.ones(2)}, path)
    ck.save_training_state({"epoch": 2, "x": torch.ones(2)}, path)
    path.write_bytes(b"garbage" * 10)
    assert ck.load_training_state(path)["epoch"] == 1
    ck.previous_path(path).unlink()
    with pytest.raises(MarineLifeError, match="last.ckpt"):
        ck.load_training_state(path)


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "evil": Evil()}, path)
    with pytest.raises(MarineLifeError, match="last.ckpt"):
        ck.load_training_state(path)
    assert not marker.exists()


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ck.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
