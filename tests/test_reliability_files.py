"""Damaged checkpoints are named; resume falls back to the previous one; a full disk loses nothing.

One tiny two-epoch run is trained once per module; each test works on its own copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from marinelife import fileio
from marinelife.cli import main
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError
from marinelife.fit import checkpoint as ck
from marinelife.models.bundle import load_bundle

SETTINGS = [
    "architecture=test_efficientnet",  # timm's 100k-parameter test net: seconds per epoch
    "input_size=32",
    "workers=0",
    "epochs=2",
    "finetune_epochs=0",
    "feature_cache=false",
    "batch_size=8",
    "patience=0",
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("files-data")
    return make_synthetic_dataset(
        root / "data", num_classes=3, counts={"train": 8, "val": 2, "test": 2}, size=32
    )


def _train(data: Path, runs: Path, name: str) -> int:
    sets = [arg for pair in SETTINGS for arg in ("--set", pair)]
    return main(["train", "--data", str(data), "--recipe", "two-stage-lite", "--name", name,
                 "--runs-dir", str(runs), "--no-pretrained", "-q", *sets])  # fmt: skip


def _resume(data: Path, runs: Path, name: str) -> int:
    return main(["train", "--data", str(data), "--name", name, "--runs-dir", str(runs),
                 "--resume", "-q"])  # fmt: skip


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A completed 2-epoch run: last.ckpt (epoch 2), last.prev.ckpt (epoch 1), the bundle."""
    runs = tmp_path_factory.mktemp("files-runs")
    old = os.environ.get("MARINELIFE_CACHE")
    os.environ["MARINELIFE_CACHE"] = str(runs / "cache")
    try:
        assert _train(data, runs, "done") == 0
    finally:
        if old is None:
            os.environ.pop("MARINELIFE_CACHE", None)
        else:
            os.environ["MARINELIFE_CACHE"] = old
    run = runs / "done"
    assert ck.load_training_state(run / "last.ckpt")["epoch"] == 2
    assert ck.load_training_state(run / "last.prev.ckpt")["epoch"] == 1
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs / "done")
    return runs / "done"


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled":
        rng = np.random.default_rng(0)
        path.write_bytes(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "zero-byte":
        path.write_bytes(b"")
    elif how == "bit-flips":
        # Flip bytes in the first kilobyte: headers, lengths and offsets, not just tensor data.
        buffer = bytearray(data)
        for i in range(0, min(1024, len(buffer)), 7):
            buffer[i] ^= 0xFF
        path.write_bytes(bytes(buffer))
    elif how == "missing":
        path.unlink()
    else:
        raise AssertionError(how)


DAMAGE = ["truncated", "garbled", "zero-byte", "bit-flips"]


# ---------------------------------------------------------------------------------------------
# best.safetensors


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_best_safetensors_is_named_by_every_reader(run_copy, data, how, capsys):
    _damage(run_copy / "best.safetensors", how)
    with pytest.raises(MarineLifeError, match="best.safetensors"):
        load_bundle(run_copy)
    with pytest.raises(MarineLifeError, match="best.safetensors"):
        fileio.load_weights(run_copy / "best.safetensors")
    capsys.readouterr()
    image = next((data / "test").rglob("*.png"))
    assert main(["predict", str(run_copy), str(image), "--backend", "torch", "-q"]) == 2
    err = capsys.readouterr().err
    assert "best.safetensors" in err and "Traceback" not in err
    assert main(["evaluate", str(run_copy), "--data", str(data), "-q"]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_damaged_best_safetensors_on_resume_is_named(run_copy, data, capsys):
    _damage(run_copy / "best.safetensors", "truncated")
    assert _resume(data, run_copy.parent, run_copy.name) == 2
    err = capsys.readouterr().err
    assert "best.safetensors" in err and "Traceback" not in err


def test_damaged_model_json_is_named(run_copy):
    (run_copy / "model.json").write_bytes((run_copy / "model.json").read_bytes()[:40])
    with pytest.raises(MarineLifeError, match="model.json"):
        load_bundle(run_copy)


# ---------------------------------------------------------------------------------------------
# last.ckpt


@pytest.mark.parametrize("how", [*DAMAGE, "missing"])
def test_damaged_last_ckpt_is_named_and_falls_back(run_copy, how, warnings_seen):
    _damage(run_copy / "last.ckpt", how)
    if how != "missing":
        with pytest.raises(MarineLifeError, match="last.ckpt"):
            ck._load_state(run_copy / "last.ckpt")
    assert ck.load_training_state(run_copy / "last.ckpt")["epoch"] == 1
    assert any("last.ckpt" in w and "last.prev.ckpt" in w for w in warnings_seen)


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_resume_from_fallback_matches_undamaged_run(run_copy, finished, data, how, warnings_seen):
    """A bad last.ckpt (or one lost between rotation and rename) resumes from last.prev.ckpt,
    which replays epoch 2 exactly: the final weights equal the undamaged run's."""
    _damage(run_copy / "last.ckpt", how)
    assert _resume(data, run_copy.parent, run_copy.name) == 0
    assert any("falling back to last.prev.ckpt" in w for w in warnings_seen)
    _assert_same_model(_model(finished / "last.ckpt"), _model(run_copy / "last.ckpt"))


def test_no_good_checkpoint_left_is_a_clear_error(run_copy, data, capsys):
    _damage(run_copy / "last.ckpt", "garbled")
    _damage(run_copy / "last.prev.ckpt", "truncated")
    with pytest.raises(MarineLifeError, match="last.prev.ckpt"):
        ck.load_training_state(run_copy / "last.ckpt")
    assert _resume(data, run_copy.parent, run_copy.name) == 2
    err = capsys.readouterr().err
    assert "ckpt" in err and "Traceback" not in err


def test_checkpoint_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(MarineLifeError, match="not a marinelife training checkpoint"):
        ck.load_training_state(path)


# ---------------------------------------------------------------------------------------------
# write failures


def test_failed_checkpoint_write_keeps_last_ckpt_itself(tmp_path, monkeypatch):
    """The old last.ckpt is rotated only after the new one is on disk: a failing write leaves
    it in place (not only its .prev copy), and leaves no temp file."""
    path = tmp_path / "last.ckpt"
    ck.save_training_state({"epoch": 1, "x": torch.ones(2)}, path)
    before = path.read_bytes()
    real_fsync = ck.os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", full_disk)
    with pytest.raises(OSError):
        ck.save_training_state({"epoch": 2, "x": torch.zeros(2)}, path)
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_non_finite_training_state_is_never_saved(tmp_path):
    path = tmp_path / "last.ckpt"
    state = {"epoch": 1, "model": {"w": torch.tensor([1.0, float("inf")])}}
    with pytest.raises(MarineLifeError, match="NaN/inf"):
        ck.save_training_state(state, path)
    assert not path.exists()


@pytest.mark.slow
def test_disk_full_during_training_keeps_checkpoints_and_resumes(
    data, finished, tmp_path, monkeypatch, capsys
):
    """ENOSPC half-way through writing epoch 2's last.ckpt: exit 2 with the resume command,
    epoch 1's checkpoint untouched, no debris; after that, --resume ends where a clean run does."""
    real_atomic_write = ck.atomic_write
    writes = {"last.ckpt": 0}

    def filling_disk(path, write, **kwargs):
        if Path(path).name == "last.ckpt":
            writes["last.ckpt"] += 1
            if writes["last.ckpt"] == 2:

                def half_then_full(handle):
                    handle.write(b"\0" * 4096)
                    raise OSError(errno.ENOSPC, "No space left on device")

                return real_atomic_write(path, half_then_full, **kwargs)
        return real_atomic_write(path, write, **kwargs)

    monkeypatch.setattr(ck, "atomic_write", filling_disk)
    runs = tmp_path / "runs"
    assert _train(data, runs, "full") == 2
    err = capsys.readouterr().err
    assert "No space left" in err and "resume with:" in err and "Traceback" not in err
    run = runs / "full"
    assert ck._load_state(run / "last.ckpt")["epoch"] == 1  # the file itself, no fallback
    _assert_same_model(_model(finished / "last.prev.ckpt"), _model(run / "last.ckpt"))
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(ck, "atomic_write", real_atomic_write)
    assert _resume(data, runs, "full") == 0
    _assert_same_model(_model(finished / "last.ckpt"), _model(run / "last.ckpt"))


@contextlib.contextmanager
def _tiny_tmpfs(folder: Path, size_kb: int):
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode(errors='replace')})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mount needs root")
def test_really_full_filesystem_keeps_every_checkpoint_whole(data, finished, tmp_path, capsys):
    """A real tmpfs with room for epoch 1's files but not epoch 2's: whichever write hits the
    full disk, every checkpoint left is whole, and the run resumes once moved to free space."""
    sizes = {p.name: p.stat().st_size for p in finished.iterdir()}
    epoch1 = sizes["best.safetensors"] + sizes["last.ckpt"] + 64 * 1024  # + small files, slack
    budget_kb = (epoch1 + min(sizes["best.safetensors"], sizes["last.ckpt"]) // 2) // 1024
    with _tiny_tmpfs(tmp_path / "small", budget_kb) as small:
        runs = small / "runs"
        assert _train(data, runs, "full") == 2
        err = capsys.readouterr().err
        assert "No space left" in err and "Traceback" not in err
        run = runs / "full"
        assert ck._load_state(run / "last.ckpt")["epoch"] == 1
        fileio.load_weights(run / "best.safetensors")  # whole, whichever epoch wrote it
        assert not list(run.glob(".*.tmp"))
        moved = tmp_path / "big" / "full"
        shutil.copytree(run, moved)
    assert _resume(data, moved.parent, "full") == 0
    _assert_same_model(_model(finished / "last.ckpt"), _model(moved / "last.ckpt"))


def test_unrelated_write_errors_are_not_reported_as_disk_full(data, tmp_path, monkeypatch):
    """Only ENOSPC/EDQUOT become the 'free some space' message; other OS errors stay bugs."""
    real_atomic_write = ck.atomic_write

    def denied(path, write, **kwargs):
        if Path(path).name == "last.ckpt":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_atomic_write(path, write, **kwargs)

    monkeypatch.setattr(ck, "atomic_write", denied)
    with pytest.raises(PermissionError):
        _train(data, tmp_path / "runs", "denied")
