"""The one preprocessing function: model-owned data config, timm-equal eval path, hostile JSON."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import timm
import timm.data
import torch
from PIL import Image

from marinelife.config import DenoiseConfig
from marinelife.data.preprocess import (
    PreprocessConfig,
    load_and_preprocess,
    preprocess_config_for_model,
    preprocess_image,
)
from marinelife.data.transforms import build_eval_transform
from marinelife.errors import ImageDecodeError, MarineLifeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return timm.create_model("resnet18", pretrained=False, num_classes=0)


def _config(size: int = 32, denoise: str = "none") -> PreprocessConfig:
    return PreprocessConfig(
        input_size=size,
        mean=IMAGENET_MEAN,
        std=(0.229, 0.224, 0.225),
        interpolation="bicubic",
        crop_pct=0.875,
        denoise=DenoiseConfig(denoise),
    )


def _photo(width: int = 80, height: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_data_config_comes_from_the_model(lite0, resnet) -> None:
    lite = preprocess_config_for_model(lite0)
    assert lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)
    assert lite.input_size == 224
    assert lite.crop_pct == pytest.approx(lite0.pretrained_cfg["crop_pct"])
    res = preprocess_config_for_model(resnet, input_size=64, denoise=DenoiseConfig("median"))
    assert res.mean == pytest.approx(IMAGENET_MEAN)
    assert res.input_size == 64 and res.denoise.name == "median"


def test_wrapped_backbone_still_supplies_its_config(lite0) -> None:
    wrapped = torch.nn.Sequential(lite0, torch.nn.Linear(1280, 3))
    assert preprocess_config_for_model(wrapped).mean == (0.5, 0.5, 0.5)


def test_eval_path_matches_timm_eval_transform(resnet) -> None:
    config = preprocess_config_for_model(resnet, input_size=48)
    timm_tf = timm.data.create_transform(
        **timm.data.resolve_data_config({"input_size": (3, 48, 48)}, model=resnet)
    )
    image = _photo(90, 61)
    ours = preprocess_image(image, config)
    assert torch.allclose(ours, timm_tf(Image.fromarray(image)), atol=1e-6)


def test_output_shape_dtype_and_eval_transform_equivalence() -> None:
    config = _config(32, denoise="bilateral")
    image = _photo()
    out = preprocess_image(image, config)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(build_eval_transform(config)(image), out)
    assert torch.allclose(preprocess_image(Image.fromarray(image), config), out)


def test_dict_round_trip_through_json() -> None:
    config = _config(40, denoise="nlm")
    data = json.loads(json.dumps(config.to_dict()))
    back = PreprocessConfig.from_dict(data)
    assert back == config
    assert back.denoise.params["search"] == 21  # defaults are recorded, not implied


@pytest.mark.parametrize(
    "change",
    [
        {"input_size": "abc"},
        {"input_size": 10**7},
        {"input_size": True},
        {"mean": [0.5, 0.5]},
        {"mean": ["a", 0.5, 0.5]},
        {"std": [0.2, -0.1, 0.2]},
        {"std": [0.2, 0.0, 0.2]},
        {"interpolation": "cubic-ish"},
        {"interpolation": 3},
        {"crop_pct": 0.0},
        {"crop_pct": "1"},
        {"denoise": {"name": "wavelet", "params": {}}},
        {"denoise": {"name": "median", "params": {"ksize": "x"}}},
        {"denoise": "bilateral"},
        {"surprise": 1},
    ],
)
def test_from_dict_rejects_bad_data(change: dict) -> None:
    data = _config().to_dict() | change
    with pytest.raises(MarineLifeError):
        PreprocessConfig.from_dict(data)


def test_from_dict_rejects_non_mapping_and_missing_keys() -> None:
    with pytest.raises(MarineLifeError):
        PreprocessConfig.from_dict([1, 2])  # type: ignore[arg-type]
    data = _config().to_dict()
    del data["mean"]
    with pytest.raises(MarineLifeError, match="mean"):
        PreprocessConfig.from_dict(data)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_mode_goes_through_load_and_preprocess(tmp_path, mode: str) -> None:
    rgb = Image.fromarray(_photo(50, 40))
    image = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    path = tmp_path / "x.png"
    image.save(path)
    out = load_and_preprocess(path, _config(32))
    assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


def test_large_jpeg_uses_draft_and_keeps_shape(tmp_path) -> None:
    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(path, quality=90)
    config = _config(32)
    drafted = load_and_preprocess(path, config)
    full = load_and_preprocess(path, config, draft_size=None)
    assert drafted.shape == full.shape == (3, 32, 32)
    from_bytes = load_and_preprocess(path.read_bytes(), config)
    assert torch.equal(from_bytes, drafted)


def test_bad_bytes_raise_decode_error() -> None:
    buffer = io.BytesIO(b"not an image at all")
    with pytest.raises(ImageDecodeError):
        load_and_preprocess(buffer.getvalue(), _config())


def test_config_for_architecture_name_without_building_it() -> None:
    from marinelife.data.preprocess import preprocess_config_for_architecture

    lite = preprocess_config_for_architecture("tf_efficientnet_lite0", input_size=96)
    assert lite.mean == (0.5, 0.5, 0.5) and lite.input_size == 96
    with pytest.raises(MarineLifeError, match="unknown architecture"):
        preprocess_config_for_architecture("no_such_net_v9")


def test_normalisation_is_bit_identical_to_torchvision() -> None:
    from torchvision.transforms import functional as F

    from marinelife.data.preprocess import to_normalised_tensor

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image = np.random.default_rng(3).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    expected = F.normalize(F.to_tensor(Image.fromarray(image)), mean, std)
    assert torch.equal(to_normalised_tensor(image, mean, std), expected)
    # A float image (a custom pipeline's output) takes the arithmetic path, same values.
    assert torch.equal(to_normalised_tensor(image.astype(np.float32), mean, std), expected)
