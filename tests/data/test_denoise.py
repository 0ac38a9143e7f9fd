"""Denoise filters: each one cleans a noisy image, bad names/params are user errors."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from marinelife.config import DENOISE_FILTERS, DenoiseConfig
from marinelife.data.denoise import DENOISE_DEFAULTS, apply_denoise, resolve_denoise_params
from marinelife.errors import MarineLifeError


def _clean_and_noisy(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    clean = np.stack([40 + 150 * xx, 80 + 120 * yy, 160 - 80 * xx * yy], axis=-1)
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape)
    return clean.astype(np.uint8), np.clip(noisy, 0, 255).astype(np.uint8)


def test_defaults_cover_every_configurable_filter() -> None:
    assert set(DENOISE_DEFAULTS) == set(DENOISE_FILTERS)
    assert DENOISE_DEFAULTS["bilateral"] == {"d": 9, "sigma_color": 75.0, "sigma_space": 75.0}


@pytest.mark.parametrize("name", [n for n in DENOISE_FILTERS if n != "none"])
def test_each_filter_raises_psnr(name: str) -> None:
    clean, noisy = _clean_and_noisy()
    out = apply_denoise(noisy, DenoiseConfig(name))
    assert out.shape == noisy.shape and out.dtype == np.uint8
    before = peak_signal_noise_ratio(clean, noisy)
    after = peak_signal_noise_ratio(clean, out)
    assert after > before + 3, (name, before, after)


def test_none_is_identity() -> None:
    _, noisy = _clean_and_noisy()
    assert apply_denoise(noisy, DenoiseConfig("none")) is noisy


def test_params_override_defaults_and_views_are_accepted() -> None:
    _, noisy = _clean_and_noisy()
    config = DenoiseConfig("median", {"ksize": 3})
    assert resolve_denoise_params(config) == {"ksize": 3}
    flipped = noisy[:, ::-1]  # a non-contiguous view
    assert apply_denoise(flipped, config).shape == noisy.shape


def test_unknown_filter_is_user_error() -> None:
    with pytest.raises(MarineLifeError, match="unknown filter 'wavelet'"):
        apply_denoise(np.zeros((8, 8, 3), np.uint8), DenoiseConfig("wavelet"))


def test_unknown_param_names_filter_and_valid_params() -> None:
    with pytest.raises(MarineLifeError) as info:
        apply_denoise(np.zeros((8, 8, 3), np.uint8), DenoiseConfig("bilateral", {"sigma": 3}))
    message = str(info.value)
    assert "bilateral" in message and "sigma_color" in message and "'sigma'" in message


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("median", {"ksize": 4}),
        ("median", {"ksize": 2.5}),
        ("gaussian", {"ksize": 999}),
        ("nlm", {"h": -1}),
        ("nlm", {"h": float("nan")}),
        ("bilateral", {"d": True}),
        ("bilateral", {"sigma_color": "75"}),
    ],
)
def test_bad_param_values_are_user_errors(name: str, params: dict) -> None:
    with pytest.raises(MarineLifeError):
        resolve_denoise_params(DenoiseConfig(name, params))
