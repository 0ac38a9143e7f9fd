"""NaN/inf losses and gradients stop the run naming the step, or are skipped and counted with
``--set skip_nonfinite=true``; a non-finite weight never reaches a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marinelife.cli import main
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.fit import stages

# 24 training images, batch 8: 3 steps per epoch, 2 epochs: global steps 1..6.
SETTINGS = [
    "architecture=test_efficientnet",
    "input_size=32",
    "workers=0",
    "epochs=2",
    "finetune_epochs=0",
    "batch_size=8",
    "patience=0",
]
BAD_STEPS = (2, 5)  # global step numbers whose loss (or gradient) is poisoned


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("nonfinite") / "data",
        num_classes=3,
        counts={"train": 8, "val": 2, "test": 2},
        size=32,
    )


def _train(data: Path, runs: Path, *extra: str) -> int:
    sets = [arg for pair in SETTINGS for arg in ("--set", pair)]
    return main(["train", "--data", str(data), "--recipe", "two-stage-lite", "--name", "r",
                 "--runs-dir", str(runs), "--no-pretrained", "-q", *sets, *extra])  # fmt: skip


def _poison(monkeypatch, kind: str) -> None:
    """Make the training loss (or only its gradient) non-finite at BAD_STEPS."""
    real_forward = stages.RegularizedLoss.forward
    calls = {"n": 0}

    def forward(self, logits, targets):
        loss = real_forward(self, logits, targets)
        calls["n"] += 1
        if calls["n"] not in BAD_STEPS:
            return loss
        if kind == "nan-loss":
            return loss * float("nan")
        if kind == "inf-loss":
            return loss + float("inf")
        # A finite loss whose gradient is NaN: d sqrt(x)/dx at 0 is inf, times 0 is NaN.
        return loss + 0.0 * torch.sqrt(logits.abs() * 0.0).sum()

    monkeypatch.setattr(stages.RegularizedLoss, "forward", forward)


def _assert_every_saved_weight_finite(run: Path) -> None:
    for path in run.glob("*.safetensors"):
        for name, tensor in load_file(path).items():
            assert torch.isfinite(tensor).all(), (path.name, name)
    for path in run.glob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, tensor in state["model"].items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), (path.name, name)


@pytest.mark.parametrize("feature_cache", ["true", "false"])
@pytest.mark.parametrize("kind", ["nan-loss", "inf-loss", "nan-grad"])
def test_non_finite_step_stops_the_run_naming_the_step(
    data, tmp_path, monkeypatch, capsys, kind, feature_cache
):
    _poison(monkeypatch, kind)
    assert _train(data, tmp_path / "runs", "--set", f"feature_cache={feature_cache}") == 2
    err = capsys.readouterr().err
    assert "non-finite loss or gradient" in err and "Traceback" not in err
    assert "step 2 (global step 2)" in err
    assert "skip_nonfinite=true" in err  # the message names the way out
    run = tmp_path / "runs" / "r"
    assert not (run / "best.safetensors").exists() and not (run / "last.ckpt").exists()


@pytest.mark.parametrize("kind", ["nan-loss", "nan-grad"])
def test_skip_nonfinite_skips_counts_and_reports(data, tmp_path, monkeypatch, kind):
    _poison(monkeypatch, kind)
    assert _train(data, tmp_path / "runs", "--set", "skip_nonfinite=true") == 0
    run = tmp_path / "runs" / "r"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == len(BAD_STEPS)
    state = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["skipped_nonfinite"] == len(BAD_STEPS)
    _assert_every_saved_weight_finite(run)


@pytest.mark.parametrize("skip", ["false", "true"])
def test_huge_learning_rate_is_caught_and_nothing_non_finite_is_saved(data, tmp_path, capsys, skip):
    """lr=1e30 overflows the weights through finite gradients (AdamW's decay step): the run stops
    at the step that did it, whether or not skipping is on, and saves nothing non-finite."""
    extra = ["--set", "lr=1e30", "--set", "weight_decay=0.1", "--set", f"skip_nonfinite={skip}"]
    assert _train(data, tmp_path / "runs", *extra) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "global step" in err and "non-finite" in err
    assert "lower the learning rate" in err
    _assert_every_saved_weight_finite(tmp_path / "runs" / "r")
