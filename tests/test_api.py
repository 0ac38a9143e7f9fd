"""The public API (`import marinelife as ml`) on tiny generated data: no network, seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import marinelife as ml
from marinelife.cli import main
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError
from marinelife.fileio import file_sha256

# Seconds, not minutes: a 32 px test network, random init, one epoch per stage.
TINY = {
    "architecture": "test_efficientnet",
    "pretrained": False,
    "epochs": 1,
    "finetune_epochs": 1,
    "input_size": 32,
    "batch_size": 4,
    "workers": 0,
    "report": False,
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("api") / "data",
        num_classes=3,
        counts={"train": 8, "val": 4, "test": 4},
        size=32,
    )


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    project = tmp_path_factory.mktemp("api-runs")
    return ml.train(data, recipe="two-stage-lite", name="r", project=project, **TINY)


def test_import_is_light_and_lists_the_api():
    code = "import sys, marinelife as ml; print('torch' in sys.modules, callable(ml.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert {"train", "load", "check", "split", "compare", "cv", "Run", "Model"} <= set(dir(ml))
    with pytest.raises(AttributeError):
        ml.nosuch  # noqa: B018


def test_train_returns_a_run_with_metrics_and_history(run):
    assert isinstance(run, ml.Run) and run.path.name == "r"
    assert run.config.architecture == "test_efficientnet" and run.config.epochs == 1
    assert 0.0 <= run.test_metrics["accuracy"] <= 1.0
    assert [row["stage"] for row in run.history] == ["head", "finetune"]
    assert (run.path / "config.yaml").is_file() and (run.path / "best.safetensors").is_file()


def test_round_trip_train_predict_export_onnx_predict(run, data):
    model = run.load()
    preds = model.predict(data / "test", top_k=2)
    assert len(preds) == 12 and all(len(p.top_k) == 2 for p in preds)
    assert all(p.label in [*model.classes, "unknown"] and 0 <= p.score <= 1 for p in preds)
    onnx = run.export()
    assert onnx == run.path / "export" / "model.onnx" and onnx.is_file()
    again = ml.load(onnx).predict(data / "test", top_k=2)
    assert [p.label for p in again] == [p.label for p in preds]


def test_predict_takes_paths_pil_images_and_arrays(run, data):
    model = run.load(reject=False)
    path = sorted((data / "test").rglob("*.png"))[0]
    image = Image.open(path)
    by_path, by_pil, by_array = model.predict([path, image, np.asarray(image.convert("RGB"))])
    assert by_path.path == str(path)
    assert by_path.label == by_pil.label == by_array.label
    assert by_pil.score == pytest.approx(by_array.score, abs=1e-6)
    assert by_path.to_dict()["label"] == by_path.label and by_path.unknown is False


def test_predict_keeps_a_place_for_unreadable_files(run, data, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    good = sorted((data / "test").rglob("*.png"))[0]
    first, second = run.load().predict([broken, good])
    assert first.error and broken.name in first.error and not first.label
    assert second.label and not second.error
    with pytest.raises(MarineLifeError, match="cannot predict on a int"):
        run.load().predict(3)


def test_unknown_override_names_the_closest_key(data, tmp_path):
    with pytest.raises(MarineLifeError, match="did you mean 'epochs'"):
        ml.train(data, project=tmp_path, epoch=1)
    with pytest.raises(MarineLifeError, match="augment.rotation=.* is not a valid float"):
        ml.train(data, project=tmp_path, augment={"rotation": "lots"})
    assert not (tmp_path / "two-stage-lite").exists() and not list(tmp_path.iterdir())


def test_cli_and_api_write_the_same_config_and_weights(data, run, tmp_path):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={str(v).lower()}")]
    argv = ["train", "--data", str(data), "--runs-dir", str(tmp_path), "--name", "cli", "-q"]
    assert main(argv + sets) == 0
    cli = tmp_path / "cli"
    assert (cli / "config.yaml").read_text() == (run.path / "config.yaml").read_text()
    assert file_sha256(cli / "best.safetensors") == file_sha256(run.path / "best.safetensors")


def test_check_split_and_compare_return_result_objects(tmp_path, run):
    photos = make_synthetic_dataset(
        tmp_path / "photos", num_classes=2, counts={"all": 10}, size=32, flat=True
    )
    report = ml.check(photos)
    assert report.ok and "OK" in str(report) and report.to_dict()["images"] == 20
    out = ml.split(photos, tmp_path / "split", val=0.2, test=0.2)
    assert {p.name for p in out.iterdir()} >= {"train", "val", "test"}
    twin = shutil.copytree(run.path, tmp_path / "twin")
    comparison = ml.compare([run.path, twin], speed=False)
    assert len(comparison.runs) == 2 and comparison.pairs[0].result.p_value == 1.0


def test_resume_needs_a_name_and_a_checkpoint(data, tmp_path):
    with pytest.raises(MarineLifeError, match="name"):
        ml.train(data, project=tmp_path, resume=True)
    with pytest.raises(MarineLifeError, match="no last.ckpt"):
        ml.train(data, project=tmp_path, name="none", resume=True)
