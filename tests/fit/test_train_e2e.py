"""Every recipe end to end on tiny data; resume; two-stage freezing; the run-folder contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import toy_training_run, tree_digest
from marinelife.cli import main
from marinelife.config import available_recipes
from marinelife.fit.stages import plan_stages

# Shrink any recipe to seconds: 1 epoch per stage, 32 px inputs, random init, no cache reuse.
TINY = [
    "epochs=1",
    "input_size=32",
    "batch_size=8",
    "feature_cache_views=1",
    "workers=0",
    "report=false",
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))


def _train(data: Path, runs: Path, recipe: str, name: str, *extra: str) -> int:
    sets = [arg for pair in TINY for arg in ("--set", pair)]
    return main(
        [
            "train",
            "--data",
            str(data),
            "--recipe",
            recipe,
            "--name",
            name,
            "--runs-dir",
            str(runs),
            "--no-pretrained",
            "-q",
            *sets,
            *extra,
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_runs_end_to_end(recipe, tiny_dataset, tmp_path, capsys):
    before = tree_digest(tiny_dataset)
    extra = ["--set", "finetune_epochs=1"] if "two-stage" in recipe else []
    assert _train(tiny_dataset, tmp_path / "runs", recipe, "r", *extra) == 0
    run = tmp_path / "runs" / "r"
    for name in (
        "config.yaml",
        "classes.json",
        "metrics.csv",
        "best.safetensors",
        "model.json",
        "last.ckpt",
        "test_metrics.json",
    ):
        assert (run / name).is_file(), name
    plan = json.loads((run / "plan.json").read_text())
    assert plan["world_size"] == 1 and plan["stages"]
    # 4 classes x 12 training photos at batch 8, as the loader really ran them.
    assert {s["steps_per_epoch"] for s in plan["stages"].values()} == {6}
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == set(json.loads((run / "classes.json").read_text()))
    assert len(metrics["confusion_matrix"]) == 4
    assert "macro_f1" in metrics
    out = capsys.readouterr().out
    assert "test accuracy" in out and "precision" in out
    assert tree_digest(tiny_dataset) == before


def test_two_stage_freezes_then_unfreezes_top(tiny_dataset, tmp_path):
    from marinelife.config import resolve_config
    from marinelife.data.scan import scan_dataset
    from marinelife.pipeline.training import build_trainer

    config = resolve_config(
        "two-stage",
        TINY + ["finetune_epochs=1", "finetune_fraction=0.35", "feature_cache=false"],
        {"pretrained": False},
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer = build_trainer(scan_dataset(tiny_dataset), config, run_dir)
    model = trainer.model
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer._run_stage(trainer.stages[0], None)
    after_head = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k for k in initial if not torch.equal(initial[k], after_head[k])}
    assert changed and all(k.startswith("head.") for k in changed), sorted(changed)[:5]
    trainer.state.stage_index = 1
    trainer.state.epoch = 0
    trainer._run_stage(trainer.stages[1], None)
    final = model.state_dict()
    changed2 = {k for k in final if not torch.equal(after_head[k], final[k])}
    backbone_changed = {k for k in changed2 if k.startswith("backbone.")}
    assert backbone_changed, "stage 2 must train part of the backbone"
    assert "backbone.conv_stem.weight" not in backbone_changed  # bottom stays frozen
    # Frozen BatchNorm layers keep their running statistics while the top fine-tunes.
    frozen_bn_stats = [k for k in backbone_changed if "running_" in k and "blocks.0." in k]
    assert not frozen_bn_stats


def test_baseline_lite_inits_the_head_then_tunes_every_block(tiny_dataset, tmp_path):
    from marinelife.config import resolve_config
    from marinelife.data.scan import scan_dataset
    from marinelife.pipeline.training import build_trainer

    config = resolve_config("baseline-lite", [*TINY, "finetune_epochs=1"], {"pretrained": False})
    assert [(s.name, s.backbone_fraction, s.train_batchnorm) for s in plan_stages(config)] == [
        ("head", 0.0, True), ("finetune", 1.0, False),
    ]  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer = build_trainer(scan_dataset(tiny_dataset), config, run_dir)
    model = trainer.model
    trainer._run_stage(trainer.stages[0], None)
    after_head = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.state.stage_index, trainer.state.epoch = 1, 0
    trainer._run_stage(trainer.stages[1], None)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(after_head[k], v)}
    # The whole network trains, down to the stem; BatchNorm keeps its ImageNet statistics.
    assert {"backbone.conv_stem.weight", "backbone.blocks.0.0.conv_dw.weight"} <= changed
    assert not {k for k in changed if k.startswith("backbone.") and ".bn" in k}


def test_resume_gives_same_weights_as_uninterrupted(tiny_dataset, tmp_path, monkeypatch):
    sets = ["--set", "epochs=3", "--set", "feature_cache=false", "--set", "augment.rotation=10"]
    runs = tmp_path / "runs"
    assert _train(tiny_dataset, runs, "two-stage-lite", "full", *sets) == 0

    import marinelife.fit.trainer as trainer_mod

    real = trainer_mod.train_one_epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_one_epoch", interrupted)
    assert _train(tiny_dataset, runs, "two-stage-lite", "cut", *sets) == 130
    monkeypatch.setattr(trainer_mod, "train_one_epoch", real)
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dataset),
                "--name",
                "cut",
                "--runs-dir",
                str(runs),
                "--resume",
                "-q",
            ]
        )
        == 0
    )
    full = torch.load(runs / "full" / "last.ckpt", weights_only=True)["model"]
    resumed = torch.load(runs / "cut" / "last.ckpt", weights_only=True)["model"]
    for key in full:
        assert torch.allclose(full[key].float(), resumed[key].float(), atol=1e-6), key
    a = load_file(runs / "full" / "best.safetensors")
    b = load_file(runs / "cut" / "best.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_existing_run_folder_is_refused(tiny_dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "taken").mkdir(parents=True)
    (runs / "taken" / "keep.txt").write_text("mine")
    assert _train(tiny_dataset, runs, "two-stage-lite", "taken") == 2
    assert "--resume" in capsys.readouterr().err
    assert (runs / "taken" / "keep.txt").read_text() == "mine"


def test_run_folder_without_a_checkpoint_is_trained_into_again(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    """Ctrl-C before the first epoch ends leaves config.yaml etc. but nothing to resume:
    the same command then just trains (it used to say "delete ... or pick another --name")."""
    import marinelife.fit.trainer as trainer_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    runs = tmp_path / "runs"
    real = trainer_mod.train_one_epoch
    monkeypatch.setattr(trainer_mod, "train_one_epoch", interrupted)
    assert (
        _train(tiny_dataset, runs, "two-stage-lite", "again", "--set", "feature_cache=false") == 130
    )
    assert "start again with the same command" in capsys.readouterr().err
    assert (runs / "again" / "config.yaml").is_file()
    assert not (runs / "again" / "last.ckpt").exists()
    monkeypatch.setattr(trainer_mod, "train_one_epoch", real)
    assert _train(tiny_dataset, runs, "two-stage-lite", "again") == 0
    assert (runs / "again" / "last.ckpt").is_file()


def test_flat_folder_says_to_split_first(flat_dataset, tmp_path, capsys):
    assert _train(flat_dataset, tmp_path / "runs", "two-stage-lite", "x") == 2
    assert "marinelife split" in capsys.readouterr().err


@pytest.mark.slow
def test_image_path_is_independent_of_worker_count(tiny_dataset, tmp_path):
    """Per-item augmentation seeds: 0 or 2 (persistent) workers give bit-identical weights."""
    runs = tmp_path / "runs"
    common = ["--set", "epochs=2", "--set", "feature_cache=false"]
    assert _train(tiny_dataset, runs, "two-stage-lite", "w0", *common, "--set", "workers=0") == 0
    assert _train(tiny_dataset, runs, "two-stage-lite", "w2", *common, "--set", "workers=2") == 0
    a = load_file(runs / "w0" / "best.safetensors")
    b = load_file(runs / "w2" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nchw_path_runs(tiny_dataset, tmp_path):
    runs = tmp_path / "runs"
    extra = ["--set", "channels_last=false", "--set", "feature_cache=false"]
    assert _train(tiny_dataset, runs, "two-stage-lite", "b", *extra) == 0
    metrics = json.loads((runs / "b" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_bf16_autocast_trains_and_predicts():
    """bf16 autocast wraps the forward pass; loss and probabilities stay float32."""
    from marinelife.models.forward import predict_probs

    losses, model, loader = toy_training_run(amp="bf16")
    assert losses[-1] < losses[0]
    targets, probs = predict_probs(model, loader, device=torch.device("cpu"), amp="bf16")
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-3)
