"""Underwater enhancement filters: what each one does, uint8 in/out, config checks, old bundles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from marinelife.config import (
    ENHANCE_FILTERS,
    AugmentConfig,
    DenoiseConfig,
    EnhanceConfig,
    resolve_config,
)
from marinelife.data.denoise import apply_denoise
from marinelife.data.enhance import ENHANCE_DEFAULTS, apply_enhance, resolve_enhance_params
from marinelife.data.filters import apply_filters
from marinelife.data.preprocess import PreprocessConfig, preprocess_views
from marinelife.data.transforms import build_train_transform
from marinelife.errors import MarineLifeError

SIZE = 64


def _blue_green(seed: int = 0) -> np.ndarray:
    """A typical underwater cast: little red, strong green and blue, some texture."""
    rng = np.random.default_rng(seed)
    red = np.full((SIZE, SIZE), 30.0)
    green = 120 + rng.normal(0, 10, (SIZE, SIZE))
    blue = 150 + rng.normal(0, 10, (SIZE, SIZE))
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def _neutral_grey(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = np.clip(128 + rng.normal(0, 30, (SIZE, SIZE, 1)), 0, 255)
    return grey.repeat(3, -1).astype(np.uint8)


def _low_contrast(seed: int = 0) -> np.ndarray:
    """Flat, slightly tinted texture: luminance within a narrow band, low saturation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    base = 110 + 10 * np.sin(xx / 5) * np.cos(yy / 7) + rng.normal(0, 2, (SIZE, SIZE))
    return np.clip(np.rint(np.stack([base - 6, base + 4, base + 8], -1)), 0, 255).astype(np.uint8)


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, ::-1]), cv2.COLOR_BGR2LAB).astype(int)


def _local_contrast(image: np.ndarray) -> float:
    """Mean absolute difference of neighbouring L* values."""
    lum = _lab(image)[..., 0]
    return float(np.abs(np.diff(lum, axis=1)).mean() + np.abs(np.diff(lum, axis=0)).mean())


def _means(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).mean(axis=0)


def test_defaults_cover_every_configurable_filter() -> None:
    assert set(ENHANCE_DEFAULTS) == set(ENHANCE_FILTERS)
    assert ENHANCE_DEFAULTS["clahe"] == {"clip_limit": 2.0, "tile": 8}
    assert ENHANCE_DEFAULTS["redcomp"]["alpha"] == 1.0


def test_grey_world_equalises_channel_means() -> None:
    image = _blue_green()
    out = apply_enhance(image, EnhanceConfig("greyworld"))
    means = _means(out)
    assert means.max() - means.min() <= 1.0, means
    # The overall brightness is kept: the grey mean stays where it was.
    assert means.mean() == pytest.approx(_means(image).mean(), abs=1.0)


def test_clahe_changes_only_luminance_and_raises_local_contrast() -> None:
    image = _low_contrast()
    out = apply_enhance(image, EnhanceConfig("clahe"))
    before, after = _lab(image), _lab(out)
    # a/b (colour) unchanged up to the uint8 round trip through RGB.
    assert np.abs(before[..., 1:] - after[..., 1:]).max() <= 2
    assert _local_contrast(out) > 2 * _local_contrast(image)
    # A higher clip limit allows more contrast (4x4 tiles of 256 px: the limit is not saturated).
    weak, strong = ({"tile": 2, "clip_limit": c} for c in (1.0, 4.0))
    weak_out = apply_enhance(image, EnhanceConfig("clahe", weak))
    assert _local_contrast(apply_enhance(image, EnhanceConfig("clahe", strong))) > 1.5 * (
        _local_contrast(weak_out)
    )


@pytest.mark.parametrize("greyworld", [0, 1])
def test_red_compensation_raises_red_of_blue_green_image(greyworld: int) -> None:
    image = _blue_green()
    out = apply_enhance(image, EnhanceConfig("redcomp", {"greyworld": greyworld}))
    assert _means(out)[0] > _means(image)[0] + 20
    if not greyworld:  # compensation alone touches only the red channel
        assert np.array_equal(out[..., 1:], image[..., 1:])
    # Without grey-world the gain comes only from green; with it, more red than grey-world alone.
    alone = apply_enhance(image, EnhanceConfig("greyworld"))
    assert (_means(out)[0] > _means(alone)[0]) == bool(greyworld)


@pytest.mark.parametrize("name", ["greyworld", "redcomp"])
def test_colour_corrections_leave_a_neutral_grey_image_alone(name: str) -> None:
    image = _neutral_grey()
    out = apply_enhance(image, EnhanceConfig(name))
    assert np.abs(out.astype(int) - image).max() <= 1


@pytest.mark.parametrize("name", [n for n in ENHANCE_FILTERS if n != "none"])
def test_uint8_shape_kept_deterministic_and_views_accepted(name: str) -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    original = image.copy()
    out = apply_enhance(image, EnhanceConfig(name))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, apply_enhance(image, EnhanceConfig(name)))
    assert np.array_equal(image, original)  # the input is never modified
    flipped = image[:, ::-1]  # a non-contiguous view gives what its contiguous copy gives
    expected = apply_enhance(np.ascontiguousarray(flipped), EnhanceConfig(name))
    assert np.array_equal(apply_enhance(flipped, EnhanceConfig(name)), expected)


def test_none_is_identity_and_black_images_are_safe() -> None:
    image = _blue_green()
    assert apply_enhance(image, EnhanceConfig()) is image
    for size in (8, 224):
        black = np.zeros((size, size, 3), np.uint8)
        for name in ("greyworld", "redcomp"):  # no cast to remove, no division by zero
            assert np.array_equal(apply_enhance(black, EnhanceConfig(name)), black)
        # CLAHE lifts a flat tile by its redistributed clip excess, but never blows it to white
        # (tiles of a pixel or two would: 0 -> 255).
        assert apply_enhance(black, EnhanceConfig("clahe")).max() <= (12 if size == 8 else 4)


def test_enhance_runs_before_denoise() -> None:
    image = _blue_green()
    enhance, denoise = EnhanceConfig("redcomp"), DenoiseConfig("median")
    expected = apply_denoise(apply_enhance(image, enhance), denoise)
    assert np.array_equal(apply_filters(image, enhance, denoise), expected)


def test_unknown_filter_names_the_closest() -> None:
    with pytest.raises(MarineLifeError, match="did you mean 'greyworld'"):
        apply_enhance(_blue_green(), EnhanceConfig("grayworld"))


def test_unknown_param_names_filter_and_valid_params() -> None:
    with pytest.raises(MarineLifeError) as info:
        resolve_enhance_params(EnhanceConfig("clahe", {"cliplimit": 3}))
    message = str(info.value)
    assert "'cliplimit'" in message and "did you mean 'clip_limit'" in message and "tile" in message
    with pytest.raises(MarineLifeError, match="valid parameters for greyworld: none"):
        resolve_enhance_params(EnhanceConfig("greyworld", {"alpha": 1}))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("clahe", {"clip_limit": 0}),
        ("clahe", {"clip_limit": float("inf")}),
        ("clahe", {"tile": 2.5}),
        ("clahe", {"tile": 10**6}),
        ("redcomp", {"alpha": -1}),
        ("redcomp", {"alpha": "1"}),
        ("redcomp", {"greyworld": 2}),
        ("redcomp", {"greyworld": True}),
    ],
)
def test_bad_param_values_are_user_errors(name: str, params: dict) -> None:
    with pytest.raises(MarineLifeError):
        resolve_enhance_params(EnhanceConfig(name, params))


def test_params_resolve_to_their_types() -> None:
    # --set gives floats (dict[str, float]); whole-number parameters come back as ints.
    assert resolve_enhance_params(EnhanceConfig("clahe", {"tile": 4.0})) == {
        "clip_limit": 2.0,
        "tile": 4,
    }


# ---------------------------------------------------------------------------------------------
# config, preprocessing config, train path


def test_set_overrides_resolve_and_bad_values_are_refused() -> None:
    config = resolve_config(None, ["enhance.name=clahe", "enhance.params.clip_limit=3"])
    assert config.enhance == EnhanceConfig("clahe", {"clip_limit": 3.0})
    assert resolve_config("two-stage-lite").enhance == EnhanceConfig()  # recipes leave it off
    with pytest.raises(MarineLifeError, match="did you mean 'clahe'"):
        resolve_config(None, ["enhance.name=clahee"])
    with pytest.raises(MarineLifeError, match="enhance.params"):
        resolve_config(None, ["enhance.params.clip_limit=lots"])
    with pytest.raises(MarineLifeError, match="did you mean 'enhance.name'"):
        resolve_config(None, ["enhance.nme=clahe"])


def _pre(enhance: EnhanceConfig | None = None, size: int = 32) -> PreprocessConfig:
    return PreprocessConfig(
        size, (0.5,) * 3, (0.25,) * 3, "bilinear", 0.875, enhance=enhance or EnhanceConfig()
    )


def test_preprocess_config_resolves_round_trips_and_loads_old_dicts() -> None:
    config = _pre(EnhanceConfig("clahe", {"clip_limit": 3}))
    data = config.to_dict()
    assert data["enhance"] == {"name": "clahe", "params": {"clip_limit": 3.0, "tile": 8}}
    assert PreprocessConfig.from_dict(data) == config
    # Off: not written (bundles and cache keys as before), and an old dict without it loads.
    plain = _pre().to_dict()
    assert "enhance" not in plain
    assert PreprocessConfig.from_dict(plain).enhance == EnhanceConfig("none", {})
    with pytest.raises(MarineLifeError, match="enhance"):
        PreprocessConfig.from_dict(plain | {"enhance": {"name": "sepia", "params": {}}})
    with pytest.raises(MarineLifeError, match="enhance"):
        PreprocessConfig.from_dict(plain | {"enhance": "clahe"})
    with pytest.raises(MarineLifeError, match="EnhanceConfig"):
        _pre(DenoiseConfig("median"))  # type: ignore[arg-type]


def test_eval_path_applies_enhancement() -> None:
    image = _blue_green()
    plain = preprocess_views(image, _pre())
    enhanced = preprocess_views(image, _pre(EnhanceConfig("greyworld")))
    assert enhanced.shape == plain.shape and not torch.equal(enhanced, plain)
    # Channel means of the enhanced input are nearly equal (the crop of a uniform cast).
    means = enhanced[0].mean(dim=(1, 2))
    assert float(means.max() - means.min()) < 0.1


def test_train_path_applies_the_same_enhancement() -> None:
    image = _blue_green()
    no_aug = AugmentConfig(rotation=0, shift=0, shear=0, zoom=0, hflip=False, vflip=False,
                           brightness=(1.0, 1.0), channel_shift=0.0)  # fmt: skip
    train = build_train_transform(no_aug, _pre(EnhanceConfig("greyworld")), seed=0)(image)
    means = train.mean(dim=(1, 2))
    assert float(means.max() - means.min()) < 0.1
    plain = build_train_transform(no_aug, _pre(), seed=0)(image).mean(dim=(1, 2))
    assert float(plain.max() - plain.min()) > 1.0
