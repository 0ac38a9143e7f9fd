"""`ensemble-lite`: several backbones as one, each at its own size, one bundle, one ONNX graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import marinelife as ml
from conftest import image_bytes
from marinelife.config import resolve_config
from marinelife.data.preprocess import (
    preprocess_config_for_architecture,
    preprocess_config_for_model,
)
from marinelife.errors import MarineLifeError
from marinelife.models import build_classifier, set_trainable
from marinelife.models.backbones import check_architecture, create_backbone
from marinelife.models.blocks import backbone_blocks
from marinelife.models.onnx_export import torch_to_onnx
from marinelife.models.runtime import OnnxBackend

LITES = "tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2"


def test_members_see_their_own_sizes_and_features_concatenate():
    ensemble = create_backbone(LITES, pretrained=False).eval()
    x = torch.randn(2, 3, 260, 260)
    sizes = [tuple(ensemble.member_input(x, i).shape[-2:]) for i in range(3)]
    assert sizes == [(224, 224), (240, 240), (260, 260)]  # each member's own ImageNet size
    assert ensemble.num_features == sum(m.num_features for m in ensemble.members) == 3840
    with torch.no_grad():
        out = ensemble(x)
        first = ensemble.members[0](ensemble.member_input(x, 0))
    assert out.shape == (2, 3840)
    assert torch.allclose(out[:, :1280], first)  # member 0's features come first


def test_data_config_is_the_largest_members():
    config = preprocess_config_for_model(create_backbone(LITES, pretrained=False))
    assert config == preprocess_config_for_architecture(LITES)
    assert (config.input_size, config.crop_pct, config.mean) == (260, 0.89, (0.5, 0.5, 0.5))


def test_members_with_other_statistics_are_renormalised():
    # lite0 wants mean/std 0.5; resnet18 wants ImageNet's: the ensemble input uses resnet's
    # size (224 > lite0's 224? equal, so the first largest: lite0) and converts for the other.
    ensemble = create_backbone("tf_efficientnet_lite0+resnet18", pretrained=False)
    pixels = torch.rand(1, 3, 224, 224)
    as_lite = (pixels - 0.5) / 0.5
    imagenet = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(ensemble.member_input(as_lite, 0), as_lite)
    assert torch.allclose(ensemble.member_input(as_lite, 1), (pixels - imagenet) / std, atol=1e-5)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0+", "tf_efficientnet_lite0+resnet_18x"])
def test_bad_member_names_are_refused_with_the_fix(name):
    with pytest.raises(MarineLifeError) as info:
        check_architecture(name)
    assert info.value.fix


def test_a_weights_file_is_refused_for_an_ensemble(tmp_path):
    with pytest.raises(MarineLifeError, match="each member's own weights"):
        create_backbone(LITES, pretrained=True, weights=tmp_path / "w.safetensors")


def test_fine_tuning_unfreezes_the_top_of_every_member():
    config = resolve_config("ensemble-lite", ["pretrained=false", "input_size=32"])
    model = build_classifier(config, 3)
    set_trainable(model, train_backbone_fraction=0.2)
    for member in model.backbone.members:
        blocks = backbone_blocks(member)
        assert any(p.requires_grad for p in blocks[-1].parameters())
        assert not any(p.requires_grad for p in blocks[0].parameters())


def test_one_onnx_graph_matches_pytorch(tmp_path):
    config = resolve_config("ensemble-lite", ["pretrained=false", "input_size=48"])
    model = build_classifier(config, 5).eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        logits = model(x)
    path = tmp_path / "m.onnx"
    torch_to_onnx(model, 48, path, opset=17, dynamic_batch=True)
    assert np.allclose(OnnxBackend(path)(x.numpy()), logits.numpy(), atol=1e-4)


def test_recipe_is_offline_and_head_only_by_default():
    config = resolve_config("ensemble-lite")
    assert config.architecture == LITES and config.pretrained and config.feature_cache
    assert config.finetune_epochs == 0 and "offline" in config.description.lower()


@pytest.mark.slow
def test_ensemble_recipe_through_every_command(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    run = ml.train(
        tiny_dataset, recipe="ensemble-lite", name="ens", project=tmp_path / "runs",
        pretrained=False, input_size=40, epochs=2, feature_cache_views=1, batch_size=8,
        workers=0, report=True,
    )  # fmt: skip
    assert run.test_metrics["architecture"] == LITES
    assert (run.path / "report.html").is_file()
    model = run.load()
    preds = model.predict(tiny_dataset / "test")
    assert len(preds) == 16 and all(p.label for p in preds)
    flipped = run.evaluate(tta="flip")
    assert flipped["tta"]["mode"] == "flip" and 0 <= flipped["accuracy"] <= 1

    onnx = run.export(int8=True, data=tiny_dataset)
    exported = json.loads((onnx.parent / "model.json").read_text())
    assert exported["architecture"] == LITES and exported["export"]["quantize"] == "int8"
    onnx_preds = ml.load(onnx).predict(tiny_dataset / "test")
    assert len(onnx_preds) == 16

    image = next((tiny_dataset / "test").rglob("*.png"))
    assert ml.explain(run.path, image, out=tmp_path / "cam.png").is_file()
    assert ml.audit(run.path, tiny_dataset, out=tmp_path / "audit").exists()
    twin = shutil.copytree(run.path, tmp_path / "runs" / "ens-copy")
    assert len(ml.compare([run.path, twin], speed=False).runs) == 2

    from marinelife.infer.predictor import Predictor
    from marinelife.infer.server import create_app

    with TestClient(create_app(Predictor.load(run.path))) as client:
        upload = {"file": ("a.png", image_bytes("PNG"), "image/png")}
        reply = client.post("/v1/predict", files=upload)
    assert reply.status_code == 200, reply.text


def _quick(data, tmp_path, name, recipe="ensemble-lite", **overrides):
    return ml.train(
        data, recipe=recipe, name=name, project=tmp_path / "runs", input_size=40, epochs=1,
        feature_cache_views=1, batch_size=8, workers=0, report=False, **overrides,
    )  # fmt: skip


@pytest.mark.slow
def test_members_are_cached_apart_and_shared(tiny_dataset, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from marinelife.models import backbones

    # The offline ImageNet weights (the same digest every time), never the network.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbones, "_hub_reachable", lambda url: False)
    monkeypatch.setattr(backbones, "_timm_cached_file", lambda cfg: None)
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    pair = _quick(
        tiny_dataset, tmp_path, "pair", architecture="tf_efficientnet_lite0+tf_efficientnet_lite2"
    ).test_metrics
    assert pair["feature_cache"]["features train"]["members_built"] == 2
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 4  # 2 members x train/val
    # The three-member ensemble shares Lite0 and Lite2 with it: only Lite1 is computed.
    three = _quick(tiny_dataset, tmp_path, "three").test_metrics
    assert three["feature_cache"]["features train"]["members_built"] == 1
    assert three["feature_cache"]["features val"]["members_built"] == 1
    # Lite2 sees the ensemble's input unresized: a single-backbone Lite2 run reuses its cache.
    single = _quick(
        tiny_dataset,
        tmp_path,
        "single",
        recipe="two-stage-lite",
        architecture="tf_efficientnet_lite2",
        finetune_epochs=0,
    ).test_metrics
    assert single["feature_cache"]["features train"]["hit"]
    # Joined from cached members or computed at once: the same model, the same figures.
    again = _quick(tiny_dataset, tmp_path, "again").test_metrics
    assert again["feature_cache"]["features train"]["hit"]
    assert (again["accuracy"], again["macro_f1"]) == (three["accuracy"], three["macro_f1"])


@pytest.mark.slow
def test_a_damaged_member_entry_is_rebuilt_alone(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    first = _quick(tiny_dataset, tmp_path, "first", pretrained=False).test_metrics
    entries = sorted((tmp_path / "cache" / "features").glob("*/features.npy"))
    damaged = entries[0]
    data = bytearray(damaged.read_bytes())
    data[-8:] = b"\xff" * 8  # the last values of the last item
    damaged.write_bytes(bytes(data))
    second = _quick(tiny_dataset, tmp_path, "second", pretrained=False).test_metrics
    assert damaged.read_bytes() != bytes(data)  # computed again, not used
    assert (second["accuracy"], second["macro_f1"]) == (first["accuracy"], first["macro_f1"])
