"""Underwater image enhancement applied identically at train, eval, predict, serve and export time.

Water absorbs red first, so underwater photos come out blue-green and flat. Three classic,
cheap corrections (all ``HxWx3`` uint8 RGB in and out, deterministic):

* ``greyworld``: grey-world white balance, each channel scaled so its mean is the grey mean.
* ``clahe``: contrast-limited adaptive histogram equalisation of the L*a*b* luminance only, so
  local contrast rises and hue is left alone.
* ``redcomp``: red-channel compensation from the green channel (Ancuti et al. 2018, "Color
  Balance and Fusion for Underwater Image Enhancement", eq. 4), then grey-world as in that paper.

Like denoising, enhancement runs on the image resized to the network's working scale (see
:mod:`marinelife.data.preprocess`), so its statistics and CLAHE's tiles mean the same thing for a
small crop and a 24 MP photo. It runs *before* denoising
(:func:`marinelife.data.filters.apply_filters` says why).
"""

from __future__ import annotations

import difflib
import math

import cv2
import numpy as np

from marinelife.config import ENHANCE_FILTERS, EnhanceConfig
from marinelife.errors import MarineLifeError

# clahe: OpenCV's usual starting point for photos; redcomp: the paper's α=1, followed by
# grey-world (greyworld=1) as the paper does; greyworld=0 gives the compensation alone.
ENHANCE_DEFAULTS: dict[str, dict[str, float]] = {
    "none": {},
    "greyworld": {},
    "clahe": {"clip_limit": 2.0, "tile": 8},
    "redcomp": {"alpha": 1.0, "greyworld": 1},
}
# (low, high, whole number) per parameter. The upper bounds keep a hostile model.json from
# asking for absurd work or output (a 4096x4096 tile grid, a thousand-fold red boost).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "clip_limit": (0.01, 100.0, False),
    "tile": (1, 64, True),
    "alpha": (0.0, 10.0, False),
    "greyworld": (0, 1, True),
}
# Grey-world gains are capped: a channel that is almost empty (deep water has nearly no red)
# would otherwise be multiplied into pure noise, which is why Ancuti et al. compensate red first.
_MAX_GAIN = 8.0
_MIN_TILE_PX = 16


def resolve_enhance_params(config: EnhanceConfig) -> dict[str, float]:
    """The filter's defaults overlaid with ``config.params``, validated.

    Raises :class:`MarineLifeError` naming the closest valid filter for an unknown name and the
    valid parameters for an unknown parameter or an out-of-range value.
    """
    name = config.name
    if name not in ENHANCE_DEFAULTS:
        close = difflib.get_close_matches(str(name), ENHANCE_FILTERS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise MarineLifeError(
            f"enhance: unknown filter {name!r}",
            fix=f"{hint}choose one of {', '.join(ENHANCE_FILTERS)}",
        )
    defaults = ENHANCE_DEFAULTS[name]
    params = dict(config.params or {})
    unknown = sorted(str(k) for k in set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise MarineLifeError(
            f"enhance: filter {name!r} has no parameter {unknown[0]!r}",
            fix=f"{hint}valid parameters for {name}: {valid}",
        )
    return {
        key: _check_value(name, key, params.get(key, default)) for key, default in defaults.items()
    }


def _check_value(name: str, key: str, value: object) -> float:
    low, high, whole = _RANGES[key]
    kind = "a whole number" if whole else "a number"
    bad = MarineLifeError(
        f"enhance: {name}.{key}={value!r} is not valid",
        fix=f"{key} must be {kind} from {low:g} to {high:g}",
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise bad
    if whole:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


def apply_enhance(image: np.ndarray, config: EnhanceConfig) -> np.ndarray:
    """Enhance an ``HxWx3`` uint8 RGB array; ``"none"`` returns the input object unchanged."""
    params = resolve_enhance_params(config)
    if config.name == "none":
        return image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_enhance needs HxWx3 uint8, got {image.shape} {image.dtype}")
    if config.name == "greyworld":
        return _to_uint8(_grey_world(image.astype(np.float32)))
    if config.name == "clahe":
        return _clahe(image, float(params["clip_limit"]), int(params["tile"]))
    # redcomp
    out = _compensate_red(image.astype(np.float32) / 255.0, float(params["alpha"])) * 255.0
    return _to_uint8(_grey_world(out) if params["greyworld"] else out)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _grey_world(image: np.ndarray) -> np.ndarray:
    """Float ``HxWx3`` (any scale): each channel scaled so its mean becomes the grey mean."""
    means = image.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    grey = float(means.mean())
    if grey <= 0:  # an all-black image has no colour cast to remove
        return image
    gains = np.clip(grey / np.maximum(means, 1e-6), 1.0 / _MAX_GAIN, _MAX_GAIN)
    return image * gains.astype(np.float32)


def _compensate_red(image: np.ndarray, alpha: float) -> np.ndarray:
    """Ancuti et al. 2018 eq. 4 on [0, 1] channels: Ir + α·(mean Ig − mean Ir)·(1 − Ir)·Ig.

    The (1 − Ir)·Ig factor moves only pixels with little red and enough green, where the red
    signal was lost on the way and green still carries it; a neutral grey image, whose red and
    green means agree, is left unchanged.
    """
    red, green = image[..., 0], image[..., 1]
    shift = float(green.mean(dtype=np.float64) - red.mean(dtype=np.float64))
    out = image.copy()
    out[..., 0] = np.clip(red + alpha * shift * (1.0 - red) * green, 0.0, 1.0)
    return out


def _clahe(image: np.ndarray, clip_limit: float, tile: int) -> np.ndarray:
    # OpenCV's L*a*b* conversion assumes BGR order; give it BGR so luminance is weighted right.
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    # Tiles of a few pixels have almost no histogram to clip: a flat black tile would come out
    # white. Keep tiles >= _MIN_TILE_PX (networks' 224-384 px inputs with 8 tiles never hit this).
    tile = max(1, min(tile, min(image.shape[:2]) // _MIN_TILE_PX))
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)[:, :, ::-1])
