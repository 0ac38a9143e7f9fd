"""A run killed mid-epoch (SIGKILL) or stopped with Ctrl-C (SIGINT) resumes to the same weights.

The training child is a real process: it pauses inside the second epoch (after one optimizer step
of it), the test sends the signal from outside, then resumes with ``--resume`` and compares the
final weights with an uninterrupted run of the same seed. Checkpoints are per epoch, so the resumed
run re-does the interrupted epoch; per-epoch reseeding and per-item augmentation seeds make that
replay exact.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marinelife.cli import main
from marinelife.data.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.slow

TRAIN_PER_CLASS, CLASSES, BATCH = 8, 3, 8
ITEMS_PER_EPOCH = TRAIN_PER_CLASS * CLASSES  # 3 optimizer steps per epoch
# Pause in epoch 2 after its first step (8 items) and half-way through loading the second batch.
PAUSE_AT = ITEMS_PER_EPOCH + BATCH + BATCH // 2
SETTINGS = [
    "architecture=test_efficientnet",  # timm's 100k-parameter test net: seconds per epoch
    "input_size=32",
    "workers=0",
    "epochs=3",
    "finetune_epochs=0",
    "feature_cache=false",  # the image path: augmentation seeded per (epoch, item)
    f"batch_size={BATCH}",
    "deterministic=true",
    "augment.rotation=10",
]

# Runs the CLI and pauses (writes a marker, then waits for the test's signal) either at the N-th
# training item (those carry an epoch seed), or half-way through writing epoch 2's last.ckpt.
CHILD = r"""
import io, os, signal, sys, time
from pathlib import Path
# Ctrl-C as in a terminal, whatever the test runner passed down: an earlier test in the same
# pytest process can leave SIGINT ignored or blocked, and children inherit both.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
import marinelife.data.dataset as ds
import marinelife.fit.checkpoint as ck

where = os.environ["RELIABILITY_PAUSE_IN"]
pause_at = int(os.environ["RELIABILITY_PAUSE_AT"])
marker = Path(os.environ["RELIABILITY_MARKER"])

def pause():
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)

real_getitem = ds.ImageSampleDataset.__getitem__
items = 0

def getitem(self, item):
    global items
    if isinstance(item, tuple):
        items += 1
        if where == "epoch" and items == pause_at:
            pause()
    return real_getitem(self, item)

real_atomic_write = ck.atomic_write
checkpoints = 0

def atomic_write(path, write, **kwargs):
    global checkpoints
    if Path(path).name == "last.ckpt":
        checkpoints += 1
        if where == "checkpoint-write" and checkpoints == 2:
            def half_then_pause(handle):
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
                pause()
            return real_atomic_write(path, half_then_pause, **kwargs)
    return real_atomic_write(path, write, **kwargs)

ds.ImageSampleDataset.__getitem__ = getitem
ck.atomic_write = atomic_write
from marinelife.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    # deterministic=true switches a process-wide torch flag; keep the rest of the suite unaffected.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    data = make_synthetic_dataset(
        root / "data",
        num_classes=CLASSES,
        counts={"train": TRAIN_PER_CLASS, "val": 2, "test": 2},
        size=32,
    )
    return {"root": root, "data": data, "runs": root / "runs", "cache": root / "cache"}


def _train_args(env: dict[str, Path], name: str) -> list[str]:
    sets = [arg for pair in SETTINGS for arg in ("--set", pair)]
    return ["train", "--data", str(env["data"]), "--recipe", "two-stage-lite", "--name", name,
            "--runs-dir", str(env["runs"]), "--no-pretrained", "-q", *sets]  # fmt: skip


# name → where the child pauses. All start together, so their interpreter start-ups overlap
# each other and the in-process reference run.
CHILDREN = {"killed": "epoch", "killed-writing": "checkpoint-write", "ctrl-c": "epoch"}


@pytest.fixture(scope="module")
def children(env):
    procs = {name: _start_child(env, name, where) for name, where in CHILDREN.items()}
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def reference(env, children) -> Path:
    """The uninterrupted run (in-process: the comparison does not need a second process)."""
    old = os.environ.get("MARINELIFE_CACHE")
    os.environ["MARINELIFE_CACHE"] = str(env["cache"])
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        assert main(_train_args(env, "reference")) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if old is None:
            os.environ.pop("MARINELIFE_CACHE", None)
        else:
            os.environ["MARINELIFE_CACHE"] = old
    return env["runs"] / "reference"


def _start_child(env: dict[str, Path], name: str, where: str) -> tuple[subprocess.Popen, Path]:
    marker = env["root"] / f"{name}.paused"
    child_env = dict(os.environ)
    child_env.update(
        MARINELIFE_CACHE=str(env["cache"]),
        RELIABILITY_PAUSE_IN=where,
        RELIABILITY_PAUSE_AT=str(PAUSE_AT),
        RELIABILITY_MARKER=str(marker),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *_train_args(env, name)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, marker


def _wait_paused(env, children, name: str) -> tuple[subprocess.Popen, Path]:
    proc, marker = children[name]
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training child exited early ({proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training child never reached the pause point")
        time.sleep(0.05)
    return proc, env["runs"] / name


def _epoch_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])


def _resume(env: dict[str, Path], name: str, monkeypatch) -> None:
    monkeypatch.setenv("MARINELIFE_CACHE", str(env["cache"]))
    args = ["train", "--data", str(env["data"]), "--name", name, "--runs-dir", str(env["runs"])]
    assert main([*args, "--resume", "-q"]) == 0


def _assert_same_run(reference: Path, resumed: Path) -> None:
    want = torch.load(reference / "last.ckpt", map_location="cpu", weights_only=True)
    got = torch.load(resumed / "last.ckpt", map_location="cpu", weights_only=True)
    assert got["epoch"] == want["epoch"] == 3
    assert set(got["model"]) == set(want["model"])
    for key, value in want["model"].items():
        assert torch.allclose(value.float(), got["model"][key].float(), atol=1e-6), key
    best_want, best_got = (
        load_file(reference / "best.safetensors"),
        load_file(resumed / "best.safetensors"),
    )
    assert all(torch.allclose(best_want[k], best_got[k], atol=1e-6) for k in best_want)
    # The history of losses and accuracies matches too (timings aside).
    timing = {"seconds", "train_samples_per_s"}

    def rows(run: Path) -> list[dict[str, str]]:
        with (run / "metrics.csv").open() as fh:
            return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(fh)]

    assert rows(resumed) == rows(reference)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(env, children, reference, monkeypatch):
    proc, run = _wait_paused(env, children, "killed")
    assert _epoch_of(run / "last.ckpt") == 1  # epoch 1 checkpointed; epoch 2 is in progress
    before = (run / "last.ckpt").read_bytes()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (run / "last.ckpt").read_bytes() == before  # nothing touched it on the way down
    _resume(env, "killed", monkeypatch)
    _assert_same_run(reference, run)
    # Not trivially equal: epochs 2 and 3 moved the weights away from epoch 1's.
    epoch1 = torch.load(run / "last.prev.ckpt", map_location="cpu", weights_only=True)
    final = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert epoch1["epoch"] == 2  # the resumed run's own rotation
    first = torch.load(io.BytesIO(before), map_location="cpu", weights_only=True)["model"]
    assert any(not torch.equal(first[k], final["model"][k]) for k in first)


def test_sigkill_while_writing_a_checkpoint_leaves_the_old_one_whole(
    env, children, reference, monkeypatch
):
    """Killed with half of epoch 2's last.ckpt on disk: last.ckpt is still epoch 1's, whole;
    the half-written temp file is never read, is removed on resume, and the run ends as an
    uninterrupted one does."""
    proc, run = _wait_paused(env, children, "killed-writing")
    before = (run / "last.ckpt").read_bytes()
    partial = list(run.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(before)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (run / "last.ckpt").read_bytes() == before
    assert _epoch_of(run / "last.ckpt") == 1
    _resume(env, "killed-writing", monkeypatch)
    assert not list(run.glob(".*.tmp"))
    _assert_same_run(reference, run)


def test_sigint_stops_cleanly_says_how_to_resume_then_resumes(
    env, children, reference, monkeypatch
):
    proc, run = _wait_paused(env, children, "ctrl-c")
    before = (run / "last.ckpt").read_bytes()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    hints = [line for line in err.splitlines() if "resume with:" in line]
    assert len(hints) == 1, err  # once, on stderr
    assert "resume with" not in out
    command = shlex.split(hints[0].split("resume with:", 1)[1])
    assert command == [
        "marinelife", "train", "--data", str(env["data"]), "--name", "ctrl-c",
        "--runs-dir", str(env["runs"]), "--resume",
    ]  # fmt: skip
    # The last completed epoch's checkpoint is intact and no half-written file is left.
    assert (run / "last.ckpt").read_bytes() == before
    assert _epoch_of(run / "last.ckpt") == 1
    assert not list(run.glob(".*.tmp"))
    # Run exactly the printed command (in-process: same CLI, no second interpreter start-up).
    monkeypatch.setenv("MARINELIFE_CACHE", str(env["cache"]))
    assert main([*command[1:], "-q"]) == 0
    _assert_same_run(reference, run)


def test_interrupt_before_first_checkpoint_says_start_again(env, tmp_path, capsys, monkeypatch):
    """Ctrl-C in epoch 1: nothing to resume, and the message says so instead of a dead command."""
    import marinelife.fit.trainer as trainer_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("MARINELIFE_CACHE", str(env["cache"]))
    monkeypatch.setattr(trainer_mod, "train_one_epoch", interrupted)
    args = _train_args(env, "early")
    args[args.index("--runs-dir") + 1] = str(tmp_path / "runs")
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "resume with" not in err
