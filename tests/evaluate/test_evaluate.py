"""`marinelife evaluate` reloads a run's bundle and reproduces its test metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from marinelife.cli import main
from marinelife.evaluate.metrics import classification_metrics


def test_metrics_on_hand_made_predictions():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
         [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]]
    )  # fmt: skip
    m = classification_metrics(y, probs, classes)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["top2_accuracy"] == pytest.approx(1.0)


def test_evaluate_reproduces_training_test_metrics(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    sets = ["epochs=1", "input_size=32", "workers=0", "finetune_epochs=0"]
    args = ["train", "--data", str(tiny_dataset), "--recipe", "two-stage-lite", "--name", "r"]
    args += ["--runs-dir", str(runs), "--no-pretrained", "-q"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    trained = json.loads((runs / "r" / "test_metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(runs / "r"), "--data", str(tiny_dataset), "-q"]) == 0
    again = json.loads((runs / "r" / "test_metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(trained["accuracy"])
    assert again["confusion_matrix"] == trained["confusion_matrix"]
    assert "test accuracy" in capsys.readouterr().out
    assert main(["evaluate", str(runs / "r"), "--data", str(tiny_dataset), "--split", "val"]) == 0
    assert (runs / "r" / "val_metrics.json").is_file()


def test_training_writes_report_and_rejection(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    args = ["train", "--data", str(tiny_dataset), "--recipe", "two-stage-lite", "--name", "r"]
    args += ["--runs-dir", str(runs), "--no-pretrained", "-q"]
    sets = ["epochs=1", "input_size=32", "workers=0", "finetune_epochs=0"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    assert (runs / "r" / "report.html").is_file()
    assert any((runs / "r" / "figures").glob("*.png"))
    model_json = json.loads((runs / "r" / "model.json").read_text())
    assert 0.0 < model_json["rejection"]["threshold"] <= 1.0


def test_unreadable_test_image_is_left_out_not_counted_twice(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    bad = tiny_dataset / "test" / "synthetic disc" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(tiny_dataset), "--recipe", "two-stage-lite", "--name", "r"]
    args += ["--runs-dir", str(runs), "--no-pretrained", "-q"]
    sets = ["epochs=1", "input_size=32", "workers=0", "finetune_epochs=0", "report=false"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    for _ in range(2):  # after training, and again from `evaluate`
        metrics = json.loads((runs / "r" / "test_metrics.json").read_text())
        assert metrics["num_samples"] == 16  # 4 classes x 4 readable test images
        assert str(bad) not in metrics["files"]
        assert len(set(metrics["files"])) == len(metrics["files"])
        assert main(["evaluate", str(runs / "r"), "--data", str(tiny_dataset), "-q",
                     "--no-report"]) == 0  # fmt: skip
