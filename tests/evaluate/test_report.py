"""`report` and `compare` on run folders written without training (fast), plus one real run."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from marinelife.cli import main
from marinelife.config import resolve_config, save_config
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import save_classes, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate.compare import compare_runs, write_outputs
from marinelife.evaluate.evaluate_split import write_split_metrics
from marinelife.evaluate.report import build_report, confused_pairs
from marinelife.evaluate.stats import mcnemar_exact
from marinelife.fit.schedule import record_stage_plan
from marinelife.fit.stages import plan_stages
from marinelife.fit.trainer import METRIC_COLUMNS
from marinelife.models.bundle import ModelInfo, head_settings, write_model_json

# What training recorded; deliberately not what the report's --data would give (6 train photos).
STEPS_PER_EPOCH = 191

RESULT_FIGURES = {"confusion_matrix", "confusion_matrix_normalized", "per_class_accuracy",
                  "reliability", "misclassified"}  # fmt: skip
TRAINING_FIGURES = {"training_curves", "lr_schedule", "generalization_gap"}
DATASET_FIGURES = {"class_distribution", "split_volumes", "split_distribution", "sample_grid",
                   "image_sizes", "augmented_samples"}  # fmt: skip


def fake_run(run_dir: Path, data: Path, *, seed: int, accuracy: float, recipe: str) -> Path:
    """A run folder as `train` writes it, with made-up history and predictions."""
    run_dir.mkdir(parents=True)
    layout = scan_dataset(data)
    config = resolve_config(recipe, ["input_size=32", "pretrained=false"])
    save_config(config, run_dir / "config.yaml")
    save_classes(layout.classes, run_dir / "classes.json")
    for stage in plan_stages(config):
        record_stage_plan(run_dir, stage, STEPS_PER_EPOCH, config)
    rows = []
    for k, stage in enumerate(["head"] * 4 + ["finetune"] * 2):
        rows.append({"stage": stage, "epoch": k + 1, "train_loss": 1.5 - 0.2 * k,
                     "train_acc": 0.3 + 0.1 * k, "val_loss": 1.6 - 0.15 * k,
                     "val_acc": 0.35 + 0.08 * k, "val_f1": 0.3 + 0.08 * k, "lr": 1e-3,
                     "seconds": 1.0, "train_samples_per_s": 100.0})  # fmt: skip
    with (run_dir / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    preprocess = PreprocessConfig(
        input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, denoise=config.denoise
    )
    info = ModelInfo(architecture=config.architecture, classes=layout.classes,
                     preprocess=preprocess, head=head_settings(config),
                     metrics={"epoch": "head 3/4"}, recipe=config.recipe)  # fmt: skip
    write_model_json(info, run_dir)
    samples = layout.samples("test")
    targets = np.array(layout.targets("test"))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(layout.classes)), len(samples))
    right = rng.random(len(samples)) < accuracy
    probs[right, targets[right]] += 2.0
    probs /= probs.sum(1, keepdims=True)
    extra = {"train_seconds": 75.0, "num_parameters": 123456, "best_epoch": "head 3/4"}
    write_split_metrics(run_dir, "test", samples, targets, probs, layout.classes, extra)
    return run_dir


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from marinelife.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("report") / "data"
    return make_synthetic_dataset(root, num_classes=4, counts={"train": 6, "val": 3, "test": 6},
                                  size=32)  # fmt: skip


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    return (fake_run(base / "a", data, seed=1, accuracy=0.8, recipe="two-stage-lite"),
            fake_run(base / "b", data, seed=2, accuracy=0.4, recipe="denoise-lite"))  # fmt: skip


def test_report_writes_every_figure_and_an_offline_page(runs, data):
    page = build_report(runs[0], data=data)
    figures = {p.stem: p for p in (runs[0] / "figures").glob("*.png")}
    assert set(figures) >= RESULT_FIGURES | TRAINING_FIGURES | DATASET_FIGURES
    assert all(p.stat().st_size > 1000 for p in figures.values())
    refs = _refs(page)
    images = [r for r in refs.refs if not r.startswith("#")]
    assert {Path(r).stem for r in images} >= RESULT_FIGURES | TRAINING_FIGURES | DATASET_FIGURES
    for ref in refs.refs:
        assert not re.match(r"(?i)^(https?:)?//", ref), ref
        if not ref.startswith("#"):
            assert (runs[0] / ref).is_file(), f"report.html references missing {ref}"
    assert not refs.tags & {"script", "link", "iframe"}
    text = page.read_text(encoding="utf-8")
    assert "class_weights=none, sampler=default" in text
    assert "accuracy [95% CI]" in text and "Most-confused pairs" in text


def test_embedded_report_is_a_single_file(runs, tmp_path):
    page = build_report(runs[1], embed=True)
    refs = [r for r in _refs(page).refs if not r.startswith("#")]
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "denoise" in page.read_text(encoding="utf-8")


def test_report_without_metrics_or_history(runs, tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    for name in ("config.yaml", "metrics.csv", "model.json"):
        (run / name).write_bytes((runs[0] / name).read_bytes())
    text = build_report(run).read_text(encoding="utf-8")
    assert "Not evaluated yet" in text
    (run / "metrics.csv").unlink()
    assert "No <code>metrics.csv</code>" in build_report(run).read_text(encoding="utf-8")
    with pytest.raises(MarineLifeError, match="not a run folder"):
        build_report(tmp_path / "missing")


def test_report_draws_the_schedule_training_recorded(runs, data, tmp_path):
    """The stage summary and LR figure come from plan.json, not from the --data shown."""
    text = build_report(runs[0], data=data, gradcam=False).read_text(encoding="utf-8")
    assert f"{STEPS_PER_EPOCH} steps per epoch" in text
    assert "6 steps per epoch" not in text


def test_report_helpers():
    pairs = confused_pairs(np.array([[5, 3, 0], [1, 4, 0], [0, 0, 2]]), ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("a", "b", 3),
        ("b", "a", 1),
    ]


def test_compare_pairs_runs_on_the_same_files(runs, tmp_path):
    comparison = compare_runs(runs, speed=False)
    assert [s.recipe for s in comparison.runs] == ["two-stage-lite", "denoise-lite"]
    assert comparison.runs[1].denoise.startswith("bilateral")
    a, b = (json.loads((r / "test_metrics.json").read_text()) for r in runs)
    expected = mcnemar_exact(np.equal(a["predictions"], a["targets"]),
                             np.equal(b["predictions"], b["targets"]))  # fmt: skip
    assert comparison.pairs[0].result == expected
    for s in comparison.runs:
        assert s.accuracy.low <= s.accuracy.value <= s.accuracy.high
    paths = write_outputs(comparison, tmp_path / "cmp")
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert "McNemar p" in paths["md"].read_text() and "| a |" in paths["md"].read_text()
    for ref in _refs(paths["html"]).refs:
        assert ref.startswith("#") or (tmp_path / "cmp" / ref).is_file()


def test_compare_matches_files_regardless_of_order(runs, tmp_path):
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f in runs[1].iterdir():
        if f.is_file():
            (shuffled / f.name).write_bytes(f.read_bytes())
    metrics = json.loads((shuffled / "test_metrics.json").read_text())
    order = np.random.default_rng(0).permutation(len(metrics["files"]))
    for key in ("files", "targets", "predictions", "confidence"):
        metrics[key] = [metrics[key][i] for i in order]
    (shuffled / "test_metrics.json").write_text(json.dumps(metrics))
    again = compare_runs([runs[0], shuffled], speed=False)
    assert again.pairs[0].result == compare_runs(runs, speed=False).pairs[0].result


def test_compare_refuses_different_test_sets(runs, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for f in runs[1].iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    metrics = json.loads((other / "test_metrics.json").read_text())
    for key in ("files", "targets", "predictions", "confidence"):
        metrics[key] = metrics[key][1:]
    (other / "test_metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(MarineLifeError, match="different test files"):
        compare_runs([runs[0], other], speed=False)
    assert main(["compare", str(runs[0]), str(other), "--no-speed"]) == 2
    assert "different test files" in capsys.readouterr().err
    with pytest.raises(MarineLifeError, match="at least two"):
        compare_runs([runs[0]])
    with pytest.raises(MarineLifeError, match="twice"):
        compare_runs([runs[0], runs[0]])


def test_cli_report_and_compare(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), "-q"]) == 0
    assert "report.html" in capsys.readouterr().out
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--no-speed", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "McNemar p" in printed and "two-stage-lite" in printed
    assert (out / "comparison.png").stat().st_size > 0


@pytest.mark.slow
def test_trained_run_evaluate_tta_report_and_compare(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    sets = ["epochs=1", "input_size=32", "workers=0", "finetune_epochs=1"]
    base = ["train", "--data", str(tiny_dataset), "--runs-dir", str(runs), "--no-pretrained", "-q"]
    for name in ("r1", "r2"):
        args = base + ["--recipe", "two-stage-lite", "--name", name, "--set", f"seed={len(name)}"]
        assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    run = runs / "r1"
    args = ["evaluate", str(run), "--data", str(tiny_dataset), "--tta", "flip", "-q"]
    assert main(args) == 0
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["tta"]["mode"] == "flip" and "train_seconds" in metrics
    assert np.load(run / "test_probs.npy").shape == (16, 4)
    text = (run / "report.html").read_text(encoding="utf-8")
    assert "TTA flip" in text
    assert (run / "figures" / "augmented_samples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["compare", str(run), str(runs / "r2")]) == 0
    assert "images/s" in capsys.readouterr().out
    if importlib.util.find_spec("pytorch_grad_cam"):
        assert (run / "figures" / "misclassified_gradcam.png").stat().st_size > 0
        photo = next((tiny_dataset / "test").rglob("*.png"))
        out = tmp_path / "cam.png"
        assert main(["explain", str(run), str(photo), "--out", str(out), "-q"]) == 0
        assert out.stat().st_size > 0
