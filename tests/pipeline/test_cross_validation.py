"""Cross-validation folds: disjoint, stratified, duplicate groups kept together, full cover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marinelife.data.scan import DatasetLayout, Sample
from marinelife.errors import MarineLifeError
from marinelife.pipeline.cross_validation import assign_folds, fold_layout, summarise


def _labels_and_groups(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    groups = np.arange(len(labels))
    # Duplicate groups of 2-4 copies, always within one class (a copy filed under its class).
    start = 0
    for _ in range(12):
        size = int(rng.integers(2, 5))
        members = np.flatnonzero(labels == labels[start])[:size]
        groups[members] = groups[members[0]]
        start = (start + 17) % len(labels)
    return labels, groups


@pytest.mark.parametrize("folds", [2, 5])
def test_folds_cover_everything_once_and_keep_groups(folds):
    labels, groups = _labels_and_groups()
    fold = assign_folds(labels, groups, folds, seed=3)
    # Every image gets exactly one fold, so the held-out sets are disjoint and cover the pool.
    assert fold.shape == labels.shape
    assert set(fold.tolist()) == set(range(folds))
    held = [set(np.flatnonzero(fold == k)) for k in range(folds)]
    assert sum(len(h) for h in held) == len(labels)
    assert set().union(*held) == set(range(len(labels)))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1, f"group {g} split across folds"


def test_folds_are_stratified():
    labels, groups = _labels_and_groups()
    fold = assign_folds(labels, groups, 5, seed=0)
    overall = np.bincount(labels) / len(labels)
    for k in range(5):
        share = np.bincount(labels[fold == k], minlength=4) / (fold == k).sum()
        assert np.abs(share - overall).max() < 0.08
    assert np.array_equal(fold, assign_folds(labels, groups, 5, seed=0))  # reproducible


def test_fold_assignment_refuses_impossible_requests():
    with pytest.raises(MarineLifeError, match="at least 2"):
        assign_folds([0, 1, 0, 1], [0, 1, 2, 3], 1)
    with pytest.raises(MarineLifeError, match="distinct images"):
        assign_folds([0, 1, 0, 1], [0, 0, 1, 1], 3)


def test_fold_layout_splits_are_disjoint_and_duplicate_aware():
    labels, groups = _labels_and_groups(1)
    pool = [Sample(Path(f"/x/c{c}/{i}.jpg"), f"c{c}") for i, c in enumerate(labels)]
    layout = DatasetLayout(root=Path("/x"), classes=["c0", "c1", "c2", "c3"], splits={})
    fold = assign_folds(labels, groups, 4, seed=0)
    index = {s.path: i for i, s in enumerate(pool)}
    for k in range(4):
        split = fold_layout(layout, pool, fold, k, labels=labels, groups=groups,
                            inner_val=0.2, seed=0)  # fmt: skip
        ids = {name: {index[s.path] for s in items} for name, items in split.splits.items()}
        assert ids["test"] == set(np.flatnonzero(fold == k))
        assert ids["train"].isdisjoint(ids["val"]) and ids["train"].isdisjoint(ids["test"])
        assert ids["val"].isdisjoint(ids["test"])
        assert len(ids["train"]) + len(ids["val"]) + len(ids["test"]) == len(pool)
        val_groups = {groups[i] for i in ids["val"]}
        assert val_groups.isdisjoint({groups[i] for i in ids["train"]})
        no_inner = fold_layout(layout, pool, fold, k, labels=labels, groups=groups,
                               inner_val=0.0, seed=0)  # fmt: skip
        assert set(no_inner.splits) == {"train", "val"}


def test_summary_pools_out_of_fold_predictions():
    results = [
        {"accuracy": 0.5, "macro_f1": 0.4, "targets": [0, 1], "predictions": [0, 0],
         "num_samples": 2},
        {"accuracy": 1.0, "macro_f1": 1.0, "targets": [1, 0], "predictions": [1, 0],
         "num_samples": 2},
    ]  # fmt: skip
    summary = summarise(results, ["a", "b"], inner_val=0.15, recipe="r")
    assert summary["accuracy"]["mean"] == pytest.approx(0.75)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert summary["out_of_fold"]["confusion_matrix"] == [[2, 0], [1, 1]]
    assert summary["out_of_fold"]["accuracy"] == pytest.approx(0.75)
    json.dumps(summary)  # serialisable as written to cv_summary.json


@pytest.mark.slow
def test_cv_cli_end_to_end_then_audit(tiny_dataset, tmp_path, monkeypatch, capsys):
    from marinelife.cli import main

    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    args = ["cv", "--data", str(tiny_dataset), "--folds", "2", "--recipe", "two-stage-lite",
            "--runs-dir", str(tmp_path), "--name", "cv", "--no-pretrained", "-q"]  # fmt: skip
    sets = ["epochs=1", "input_size=32", "workers=0", "finetune_epochs=0"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    out = tmp_path / "cv"
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 2 and len(summary["accuracy"]["per_fold"]) == 2
    # Out-of-fold predictions cover train+val exactly once (4 classes x (12 + 4) images).
    assert summary["out_of_fold"]["num_samples"] == 64
    assert (out / "cv_report.html").is_file() and (out / "figures" / "cv_folds.png").is_file()
    assert "2-fold cv" in capsys.readouterr().out
    # A second call reuses the finished folds instead of training again.
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    assert "reusing" not in capsys.readouterr().out  # logged, not printed; still succeeds
    pytest.importorskip("cleanlab")
    assert main(["audit", str(out), "--data", str(tiny_dataset), "-q"]) == 0
    assert "among 64 images" in capsys.readouterr().out


def _site_photos(root: Path, sites: int) -> Path:
    """``root/CLASS/site-K/*.png``: random noise, two photos per class and site."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("crab", "eel"):
        for k in range(sites):
            (root / name / f"site-{k}").mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"site-{k}" / f"{name}{k}_{i}.png")
    return root


def test_cv_groups_keep_every_site_inside_one_fold(tmp_path, monkeypatch):
    """`cv --groups DATA/groups.csv` (as `split --groups` writes it): no site in two folds."""
    import csv

    from marinelife.api import cv
    from marinelife.cli import main
    from marinelife.data.split import run_split

    data = run_split(_site_photos(tmp_path / "photos", 9), tmp_path / "data", val=0.15,
                     test=0.15, seed=0, groups="level:1")  # fmt: skip

    def fake_train(layout, config, *, run_dir):  # the folds are under test, not training
        held = layout.splits["test"]
        targets = [layout.class_to_index[s.label] for s in held]
        metrics = {"accuracy": 1.0, "macro_f1": 1.0, "targets": targets,
                   "predictions": targets, "num_samples": len(held)}  # fmt: skip
        (run_dir / "test_metrics.json").write_text(json.dumps(metrics))

    monkeypatch.setattr("marinelife.pipeline.cross_validation.train", fake_train)
    runs = tmp_path / "runs"
    args = ["cv", "--data", str(data), "--folds", "3", "--groups", str(data / "groups.csv"),
            "--inner-val", "0.3",
            "--runs-dir", str(runs), "--name", "cv", "--no-pretrained", "-q"]  # fmt: skip
    assert main(args) == 0
    with (runs / "cv/folds.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    folds: dict[str, set[str]] = {}
    for row in rows:
        folds.setdefault(row["group"], set()).add(row["fold"])
    assert len(folds) >= 3 and all(len(f) == 1 for f in folds.values()), folds
    assert {f for v in folds.values() for f in v} == {"1", "2", "3"}
    summary = json.loads((runs / "cv/cv_summary.json").read_text())
    assert summary["groups"] == str(data / "groups.csv")
    with pytest.raises(MarineLifeError, match="only 2 groups .* for 4 folds"):
        cv(data, folds=4, groups="regex:^(train|val)/", project=runs, name="cv2")
