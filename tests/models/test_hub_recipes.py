"""Hub-backbone recipes (ConvNeXt, DINOv2 ViT): built with random weights at tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import marinelife as ml
from marinelife.config import resolve_config
from marinelife.errors import MarineLifeError
from marinelife.models import build_classifier, set_trainable
from marinelife.models.backbones import check_architecture, create_backbone
from marinelife.models.onnx_export import torch_to_onnx
from marinelife.models.runtime import OnnxBackend

HUB = {"two-stage-convnext": 32, "two-stage-dinov2": 28}  # recipe -> a tiny test input size


@pytest.mark.parametrize("recipe", list(HUB))
def test_recipe_resolves_to_a_known_pretrained_model(recipe):
    config = resolve_config(recipe)
    check_architecture(config.architecture)  # the pretrained tag exists in this timm
    assert config.freeze_backbone and config.finetune_epochs > 0 and config.feature_cache
    assert "internet" in config.description


@pytest.mark.parametrize("recipe", list(HUB))
def test_hub_backbone_trains_its_top_and_exports(recipe, tmp_path):
    size = HUB[recipe]
    config = resolve_config(recipe, [f"input_size={size}", "pretrained=false"])
    model = build_classifier(config, 3).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3)
    trainable = set_trainable(model, train_backbone_fraction=config.finetune_fraction)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < total  # the top blocks and the head, not the whole network
    path = tmp_path / "m.onnx"
    torch_to_onnx(model.eval(), size, path, opset=17, dynamic_batch=True)
    got = OnnxBackend(path)(x.numpy())
    assert np.allclose(got, logits.numpy(), atol=1e-4)


def test_vit_is_built_for_the_run_input_size():
    model = create_backbone("vit_small_patch14_dinov2.lvd142m", pretrained=False, input_size=28)
    assert model.patch_embed.img_size == (28, 28)  # not timm's default 518
    cnn = create_backbone("convnext_tiny.in12k_ft_in1k", pretrained=False, input_size=32)
    assert cnn(torch.randn(1, 3, 64, 64)).shape[-1] == cnn.num_features  # any size still works


def test_offline_error_names_the_fixes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MarineLifeError) as info:
        create_backbone("convnext_tiny.in12k_ft_in1k", pretrained=True)
    message = str(info.value)
    assert "--weights FILE" in message and "internet" in message and "-lite" in message


@pytest.mark.slow
def test_dinov2_recipe_trains_predicts_and_reloads(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    run = ml.train(
        tiny_dataset, recipe="two-stage-dinov2", name="vit", project=tmp_path / "runs",
        pretrained=False, input_size=28, epochs=1, finetune_epochs=1, feature_cache_views=1,
        batch_size=8, workers=0, report=False,
    )  # fmt: skip
    assert run.test_metrics["architecture"] == "vit_small_patch14_dinov2.lvd142m"
    preds = run.load().predict(tiny_dataset / "test")
    assert len(preds) == 16 and all(p.label for p in preds)
