from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from marinelife.errors import MarineLifeError
from marinelife.models import backbones, create_backbone, state_dict_sha256
from marinelife.models.backbones import _hub_reachable
from marinelife.models.blocks import backbone_blocks

ARCH = "resnet18"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no timm cache, an empty marinelife cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbones, "_hub_reachable", lambda url: False)
    monkeypatch.setattr(backbones, "_timm_cached_file", lambda cfg: None)
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))


def _full_state(arch: str = ARCH) -> dict[str, torch.Tensor]:
    """A full model's weights (classifier included), as published checkpoints are."""
    return timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(MarineLifeError, match="unknown architecture") as err:
        create_backbone("resnet-18", pretrained=False)
    assert "resnet18" in str(err.value)
    with pytest.raises(MarineLifeError, match="did you mean 'efficientnet_lite0'"):
        create_backbone("efficientnet-lite0", pretrained=False)
    with pytest.raises(MarineLifeError, match="unknown pretrained tag"):
        create_backbone("resnet18.no_such_tag", pretrained=False)


def test_random_init_is_tagged_and_pools():
    model = create_backbone(ARCH, pretrained=False, weights="ignored.pth")
    assert model.marinelife_weights["source"] == "random"
    assert model.marinelife_weights["sha256"] == state_dict_sha256(model)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tmp_path, offline, suffix):
    state = _full_state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:  # a training checkpoint: wrapped, saved from DataParallel
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = create_backbone(ARCH, pretrained=True, weights=path)
    assert _same(model, state)
    info = model.marinelife_weights
    assert info["source"] == "file" and info["path"] == str(path)
    assert info["sha256"] == state_dict_sha256(model)


def test_marinelife_checkpoint_keys_are_accepted(tmp_path):
    state = _full_state()
    wrapped = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    wrapped["head.1.weight"] = torch.zeros(3, 512)
    path = tmp_path / "best.safetensors"
    save_file(wrapped, path)
    assert _same(create_backbone(ARCH, pretrained=True, weights=path), state)


def test_weights_of_another_architecture_report_key_counts(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(_full_state("resnet34"), path)
    with pytest.raises(MarineLifeError, match=r"\d+ missing and \d+ unexpected") as err:
        create_backbone(ARCH, pretrained=True, weights=path)
    assert str(path) in str(err.value)


def test_shape_mismatch_is_a_user_error(tmp_path):
    state = _full_state()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(MarineLifeError, match="shapes differ"):
        create_backbone(ARCH, pretrained=True, weights=path)


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(MarineLifeError, match="refused") as err:
        create_backbone(ARCH, pretrained=True, weights=path)
    assert str(path) in str(err.value) and "open" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pth", None, "not found"),
        ("w.onnx", b"x", "unsupported weights format"),
        ("w.safetensors", b"garbage", "not a readable safetensors"),
        ("w.pth", b"garbage", "not a readable PyTorch"),
    ],
)
def test_unreadable_weight_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MarineLifeError, match=message):
        create_backbone(ARCH, pretrained=True, weights=path)


def test_pth_without_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(MarineLifeError, match="not a state dict"):
        create_backbone(ARCH, pretrained=True, weights=path)


def test_no_source_names_every_fix_and_fails_fast(offline):
    start = time.perf_counter()
    with pytest.raises(MarineLifeError) as err:
        create_backbone(ARCH, pretrained=True)
    assert time.perf_counter() - start < 5
    text = str(err.value)
    for fix in ("--weights FILE", "connect to the internet", "tf_efficientnet_lite0/1/2",
                "--no-pretrained", "unreachable"):  # fmt: skip
        assert fix in text


def test_timm_cache_is_used_without_network(tmp_path, monkeypatch):
    state = _full_state()
    path = tmp_path / "model.safetensors"
    save_file(state, path)
    monkeypatch.setattr(backbones, "_timm_cached_file", lambda cfg: str(path))
    monkeypatch.setattr(backbones, "_hub_reachable", lambda url: pytest.fail("network probed"))
    model = create_backbone(ARCH, pretrained=True)
    assert model.marinelife_weights["source"] == "timm-cache"
    assert _same(model, state)


def test_hub_probe_respects_offline_mode(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    assert _hub_reachable("https://huggingface.co") is False
    assert time.perf_counter() - start < 1


def test_efficientnet_blocks_run_stem_to_head():
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=False)
    blocks = backbone_blocks(backbone)
    assert len(blocks) == 1 + sum(len(stage) for stage in backbone.blocks) + 1
    assert blocks[0][0] is backbone.conv_stem and blocks[0][1] is backbone.bn1
    assert blocks[1] is backbone.blocks[0][0]
    assert blocks[-2] is backbone.blocks[-1][-1]
    assert blocks[-1][0] is backbone.conv_head and blocks[-1][1] is backbone.bn2


def test_no_temp_files_or_user_files_touched(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_full_state(), path)
    before = sorted(os.listdir(tmp_path)), path.read_bytes()
    create_backbone(ARCH, pretrained=True, weights=path)
    assert (sorted(os.listdir(tmp_path)), path.read_bytes()) == before
