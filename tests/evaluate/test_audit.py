"""`audit`: confident learning ranks flipped labels first; cross-class duplicates are found."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import tree_digest
from marinelife.cli import main
from marinelife.data.scan import scan_dataset
from marinelife.errors import MarineLifeError

pytest.importorskip("cleanlab")

from marinelife.evaluate.audit import cross_class_duplicates, rank_label_issues  # noqa: E402


def _noisy_probs(truth: np.ndarray, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes), len(truth)) * 0.3
    probs[np.arange(len(truth)), truth] += 0.7 + rng.uniform(0, 0.2, len(truth))
    return probs / probs.sum(1, keepdims=True)


def test_flipped_labels_rank_above_correct_ones():
    truth = np.arange(120) % 4
    labels = truth.copy()
    flipped = np.array([3, 17, 40, 58, 77, 101])
    labels[flipped] = (truth[flipped] + 1) % 4
    flagged, score = rank_label_issues(labels, _noisy_probs(truth, 4, 0))
    # The ranking puts every flipped label first; confident learning's verdict is conservative
    # on so few images (it estimates per-class-pair noise rates) but never accuses a good label.
    assert set(np.argsort(score)[: len(flipped)]) == set(flipped)
    assert set(np.flatnonzero(flagged)) <= set(flipped)
    assert flagged.sum() >= len(flipped) // 2


def _fake_evaluated_run(run: Path, data: Path, flip: str) -> None:
    """A run folder whose test predictions follow the truth while one label is wrong."""
    layout = scan_dataset(data)
    samples = layout.samples("test")
    truth = np.array(layout.targets("test"))
    labels = truth.copy()
    index = next(i for i, s in enumerate(samples) if s.path.name == flip)
    labels[index] = (truth[index] + 1) % len(layout.classes)
    run.mkdir()
    metrics = {"classes": layout.classes, "files": [str(s.path) for s in samples],
               "targets": labels.tolist()}  # fmt: skip
    (run / "test_metrics.json").write_text(json.dumps(metrics))
    np.save(run / "test_probs.npy", _noisy_probs(truth, len(layout.classes), 1).astype("f4"))


def test_audit_cli_writes_csvs_and_never_touches_the_data(tmp_path, capsys):
    from marinelife.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_classes=3,
                                  counts={"train": 6, "val": 2, "test": 10}, size=32)  # fmt: skip
    # The same photo filed under two classes.
    train = data / "train"
    copy = sorted((train / "synthetic disc").iterdir())[0]
    shutil.copy(copy, train / "synthetic square" / "copied_disc.png")
    flip = sorted((data / "test" / "synthetic square").iterdir())[3].name
    _fake_evaluated_run(tmp_path / "run", data, flip)
    before = tree_digest(data)
    assert main(["audit", str(tmp_path / "run"), "--data", str(data), "-q"]) == 0
    assert tree_digest(data) == before
    out = tmp_path / "run" / "audit"
    with (out / "label_issues.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert Path(rows[0]["file"]).name == flip
    assert rows[0]["given_label"] != rows[0]["suggested_label"]
    assert rows[0]["model_disagrees"] == "yes" and len(rows) == 30
    with (out / "duplicates_across_classes.csv").open() as fh:
        dups = list(csv.DictReader(fh))
    assert {Path(r["file"]).name for r in dups} == {copy.name, "copied_disc.png"}
    assert {r["label"] for r in dups} == {"synthetic disc", "synthetic square"}
    assert (out / "audit.html").is_file() and (out / "suspected_label_errors.png").is_file()
    assert "label errors" in capsys.readouterr().out


def test_cross_class_duplicates_ignore_same_class_copies(tiny_dataset):
    folder = tiny_dataset / "train" / "synthetic disc"
    shutil.copy(sorted(folder.iterdir())[0], folder / "again.png")
    assert cross_class_duplicates(scan_dataset(tiny_dataset)) == []


def test_audit_needs_held_out_predictions(tmp_path, tiny_dataset):
    from marinelife.evaluate.audit import run_audit

    (tmp_path / "run").mkdir()
    with pytest.raises(MarineLifeError, match="held-out predictions"):
        run_audit(tmp_path / "run", tiny_dataset)
