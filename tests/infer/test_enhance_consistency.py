"""Enhancement is one setting end to end: train → model.json → predict/serve/export, cache key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from marinelife.config import EnhanceConfig, TrainConfig, load_config, resolve_config
from marinelife.data.image_io import load_image
from marinelife.data.preprocess import (
    PreprocessConfig,
    load_and_preprocess,
    preprocess_config_for_model,
    preprocess_views,
)
from marinelife.evaluate.report_html import denoise_summary
from marinelife.fileio import save_weights
from marinelife.fit import feature_cache as fc
from marinelife.infer.predictor import Predictor
from marinelife.models import build_classifier
from marinelife.models.bundle import ModelInfo, head_settings, read_model_info, write_model_json

CLAHE = EnhanceConfig("clahe", {"clip_limit": 3.0})


def _bundle(folder: Path, enhance: EnhanceConfig) -> Path:
    config = TrainConfig(architecture="mobilenetv2_050", pretrained=False)
    model = build_classifier(config, 3).eval()
    pre = preprocess_config_for_model(model.backbone, input_size=32, enhance=enhance)
    folder.mkdir(parents=True)
    save_weights(model.state_dict(), folder / "best.safetensors")
    info = ModelInfo(config.architecture, ["a", "b", "c"], pre, head_settings(config))
    write_model_json(info, folder)
    return folder


def _photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal((40, 120, 150), 25, (60, 80, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "dive.png"
    Image.fromarray(pixels).save(path)
    return path


def test_bundle_records_enhance_and_predict_reproduces_the_eval_tensor(tmp_path):
    folder = _bundle(tmp_path / "run", CLAHE)
    written = json.loads((folder / "model.json").read_text())["preprocess"]
    assert written["enhance"] == {"name": "clahe", "params": {"clip_limit": 3.0, "tile": 8}}
    info = read_model_info(folder / "model.json")[0]
    assert info.preprocess.enhance == EnhanceConfig("clahe", {"clip_limit": 3.0, "tile": 8})

    photo = _photo(tmp_path)
    predictor = Predictor.load(folder)
    expected = preprocess_views(
        load_image(photo, draft_size=info.preprocess.draft_size), info.preprocess
    )[0]
    assert torch.equal(torch.from_numpy(predictor.preprocess(photo)), expected)
    # serve hands the upload's bytes to the same call; export checks use load_and_preprocess.
    assert torch.equal(torch.from_numpy(predictor.preprocess(photo.read_bytes())), expected)
    assert torch.equal(load_and_preprocess(photo, info.preprocess), expected)
    # ... and the enhancement really is in it.
    plain = preprocess_views(load_image(photo), _plain(info.preprocess))[0]
    assert not torch.equal(plain, expected)
    # The run report names it beside denoise.
    run = SimpleNamespace(info=info, config=None)
    assert denoise_summary(run, "enhance") == "clahe (clip_limit=3, tile=8)"  # type: ignore[arg-type]


def _plain(pre: PreprocessConfig) -> PreprocessConfig:
    return dataclasses.replace(pre, enhance=EnhanceConfig())


def test_bundle_without_enhance_is_unchanged_and_old_ones_load(tmp_path):
    folder = _bundle(tmp_path / "run", EnhanceConfig())
    data = json.loads((folder / "model.json").read_text())
    assert "enhance" not in data["preprocess"]  # what every earlier release wrote
    assert read_model_info(folder / "model.json")[0].preprocess.enhance.name == "none"


def test_feature_cache_key_follows_enhance(tmp_path):
    model = build_classifier(TrainConfig(architecture="mobilenetv2_050", pretrained=False), 3)
    keys = {}
    for name in ("none", "clahe", "greyworld"):
        pre = preprocess_config_for_model(
            model.backbone, input_size=32, enhance=EnhanceConfig(name)
        )
        keys[name] = fc.cache_key(
            image_hashes=["a" * 64], backbone="mobilenetv2_050", weights_sha="w",
            preprocess=pre.to_dict(), augment=None, views=0, seed=0,
        )  # fmt: skip
    assert len(set(keys.values())) == 3
    clip = preprocess_config_for_model(model.backbone, input_size=32, enhance=CLAHE)
    assert fc.cache_key(
        image_hashes=["a" * 64], backbone="mobilenetv2_050", weights_sha="w",
        preprocess=clip.to_dict(), augment=None, views=0, seed=0,
    ) != keys["clahe"]  # fmt: skip


@pytest.mark.slow
def test_training_with_enhance_writes_it_to_config_and_bundle(tiny_dataset, tmp_path, monkeypatch):
    from marinelife.pipeline.training import train

    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    config = resolve_config(
        None,
        ["epochs=1", "input_size=32", "batch_size=8", "feature_cache_views=1", "workers=0",
         "report=false", "enhance.name=redcomp", "enhance.params.alpha=0.5"],
        {"architecture": "mobilenetv2_050", "pretrained": False},
    )  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(tiny_dataset, config, run_dir=run_dir)
    assert load_config(run_dir / "config.yaml").enhance == EnhanceConfig("redcomp", {"alpha": 0.5})
    info = read_model_info(run_dir / "model.json")[0]
    assert info.preprocess.enhance == EnhanceConfig("redcomp", {"alpha": 0.5, "greyworld": 1})
