"""A dataset of one class cannot train a classifier: check, split and train say so with the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

from marinelife.cli import main
from marinelife.data.synthetic import make_synthetic_dataset


def _one_class(tmp_path: Path, *, flat: bool) -> Path:
    """Two generated classes, then the second one's folders removed (the test's own files)."""
    counts = {"all": 12} if flat else {"train": 8, "val": 2, "test": 2}
    root = make_synthetic_dataset(tmp_path / "one", num_classes=2, counts=counts, size=32,
                                  flat=flat)  # fmt: skip
    for folder in root.rglob("synthetic square"):
        shutil.rmtree(folder)
    return root


def test_check_reports_a_single_class_as_a_problem(tmp_path, capsys):
    data = _one_class(tmp_path, flat=True)
    assert main(["check", str(data)]) == 1
    out = capsys.readouterr().out
    assert "only 1 class with images (synthetic disc)" in out and "at least 2" in out
    assert "OK: no problems found" not in out


def test_split_refuses_a_single_class_and_writes_nothing(tmp_path, capsys):
    data = _one_class(tmp_path, flat=True)
    assert main(["split", str(data), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 2" in err and str(data) in err
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_single_class_before_any_run_folder(tmp_path, capsys):
    data = _one_class(tmp_path, flat=False)
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(data), "--runs-dir", str(runs), "--name", "r"]
    assert main([*argv, "--no-pretrained", "--set", "epochs=1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not runs.exists()
