"""`evaluate RUN --data OTHER` keeps the run's own result and stores OTHER's under evals/;
subsets of the model's classes are evaluated (absent ones named), unknown classes refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import make_bundle
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate.evals import read_evals, split_fingerprint
from marinelife.evaluate.evaluate_split import run_evaluate
from marinelife.evaluate.report import build_report


def _dataset(path: Path, classes: int = 4, seed: int = 0) -> Path:
    counts = {"train": 2, "val": 1, "test": 3}
    return make_synthetic_dataset(path, num_classes=classes, counts=counts, size=32, seed=seed)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("evals") / "template")


@pytest.fixture
def run(bundle_dir: Path, tmp_path: Path) -> Path:
    """A run folder whose own test result is on ``tmp_path/train-data`` (as `train` leaves it)."""
    folder = tmp_path / "run"
    folder.mkdir()
    for item in bundle_dir.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    run_evaluate(folder, _dataset(tmp_path / "train-data"), report=False)
    return folder


def _snapshot(run: Path) -> dict[str, bytes]:
    return {
        n: (run / n).read_bytes() for n in ("test_metrics.json", "test_probs.npy", "model.json")
    }


def test_other_dataset_goes_to_evals_and_keeps_the_runs_own(run, tmp_path, capsys):
    own = json.loads((run / "test_metrics.json").read_text())
    assert own["data"] == str((tmp_path / "train-data").resolve())
    assert own["data_fingerprint"].startswith("sha256:")
    before = _snapshot(run)
    capsys.readouterr()
    other = _dataset(tmp_path / "reef 2024", seed=7)
    metrics = run_evaluate(run, other, report=False)
    out = capsys.readouterr().out
    assert _snapshot(run) == before  # the training data's result is untouched
    saved = run / "evals" / "reef-2024-test.json"
    assert "not the run's training data" in out and str(saved) in out and "unchanged" in out
    stored = json.loads(saved.read_text())
    assert stored["data"] == str(other.resolve()) and stored["split"] == "test"
    assert stored["data_fingerprint"] == metrics["data_fingerprint"] != own["data_fingerprint"]
    assert np.load(saved.with_suffix(".npy")).shape == (12, 4)
    # Again on the same dataset and split: its own eval file is replaced, and the output says so.
    run_evaluate(run, other, split="test", report=False)
    assert "replaced the earlier result of this dataset and split" in capsys.readouterr().out
    assert _snapshot(run) == before
    # Another folder with the same name gets a file of its own instead of replacing that one.
    twin = _dataset(tmp_path / "elsewhere" / "reef 2024", seed=8)
    run_evaluate(run, twin, report=False)
    names = sorted(ev.name for ev in read_evals(run))
    assert (
        len(names) == 2 and names[0] == "reef-2024-test" and names[1].startswith("reef-2024-test-")
    )
    # The training data itself still updates the run's own file (asked for: same data).
    run_evaluate(run, tmp_path / "train-data", report=False)
    assert "replaced the earlier result" in capsys.readouterr().out
    again = json.loads((run / "test_metrics.json").read_text())
    assert again["accuracy"] == own["accuracy"] and again["data"] == own["data"]


def test_report_has_a_section_per_evaluation(run, tmp_path):
    run_evaluate(run, _dataset(tmp_path / "second reef", seed=3), report=False)
    run_evaluate(run, _dataset(tmp_path / "third reef", classes=2, seed=4), report=False)
    page = build_report(run, data=tmp_path / "second reef", gradcam=False).read_text()
    assert "Results on the test split" in page
    assert "Evaluation on second reef (test split)" in page
    assert "Evaluation on third reef (test split)" in page
    assert "Dataset second reef (not the training data)" in page
    assert "Dataset (training data)" in page
    assert (
        run / "figures" / "evals" / "second-reef-test-confusion_matrix_normalized.png"
    ).is_file()
    assert (run / "figures" / "datasets" / "second-reef" / "class_distribution.png").is_file()


def test_changed_training_data_is_not_passed_off_as_the_runs_result(run, tmp_path, capsys):
    before = _snapshot(run)
    data = tmp_path / "train-data"
    extra = data / "test" / "synthetic disc" / "new.png"
    extra.write_bytes(next((data / "test" / "synthetic disc").glob("*.png")).read_bytes())
    capsys.readouterr()
    run_evaluate(run, data, report=False)
    assert _snapshot(run) == before
    assert (run / "evals" / "train-data-test.json").is_file()
    assert "not the run's training data" in capsys.readouterr().out


def test_fingerprint_follows_names_sizes_and_times(tmp_path):
    from marinelife.data.scan import scan_dataset

    data = _dataset(tmp_path / "d")
    samples = scan_dataset(data).samples("test")
    first = split_fingerprint(data, samples)
    assert split_fingerprint(data, list(reversed(samples))) == first  # order does not matter
    os.utime(samples[0].path, ns=(1, 1))
    assert split_fingerprint(data, samples) != first


def test_subset_of_the_models_classes_names_the_absent_ones(run, tmp_path, capsys):
    capsys.readouterr()
    metrics = run_evaluate(run, _dataset(tmp_path / "two", classes=2), report=False)
    assert metrics["absent_classes"] == ["synthetic star", "synthetic triangle"]
    assert "absent: 2 of the model's 4 classes" in capsys.readouterr().out
    assert len(metrics["classes"]) == 4 and metrics["num_samples"] == 6
    f1 = [metrics["per_class"][c]["f1"] for c in ("synthetic disc", "synthetic square")]
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 2)  # over the present classes only


def test_unknown_classes_are_an_error_naming_them(run, tmp_path):
    data = _dataset(tmp_path / "five", classes=5)
    with pytest.raises(MarineLifeError, match="unknown to the model: synthetic ring") as info:
        run_evaluate(run, data, report=False)
    assert "4 classes" in str(info.value) and str(data) in str(info.value)
    renamed = _dataset(tmp_path / "case")
    (renamed / "train" / "synthetic disc").rename(renamed / "train" / "Synthetic Disc")
    for split in ("val", "test"):
        (renamed / split / "synthetic disc").rename(renamed / split / "Synthetic Disc")
    with pytest.raises(MarineLifeError, match="the model has 'synthetic disc'"):
        run_evaluate(run, renamed, report=False)
