"""Denoising filters (OpenCV) applied identically at train, eval, predict and serve time.

The filter runs on the image after it has been resized to the network's working scale (see
:mod:`marinelife.data.preprocess`), so a kernel of 9 px means the same thing for a 400 px crop
and a 24 MP photo, and the cost stays small even for non-local means.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from marinelife.config import DENOISE_FILTERS, DenoiseConfig
from marinelife.errors import MarineLifeError

# The original bilateral filter was d=9, σcolour=75, σspace=75; the others are OpenCV's usual
# starting points for 8-bit photos.
DENOISE_DEFAULTS: dict[str, dict[str, float]] = {
    "none": {},
    "bilateral": {"d": 9, "sigma_color": 75.0, "sigma_space": 75.0},
    "median": {"ksize": 5},
    "gaussian": {"ksize": 5, "sigma": 0.0},
    "nlm": {"h": 10.0, "h_color": 10.0, "template": 7, "search": 21},
}

# Parameters OpenCV needs as integers, and those that must additionally be odd window sizes.
_INT_PARAMS = {"d", "ksize", "template", "search"}
_ODD_PARAMS = {"ksize", "template", "search"}
# Upper bounds keep a hostile model.json from turning one prediction into minutes of CPU.
_MAX_WINDOW = 63


def resolve_denoise_params(config: DenoiseConfig) -> dict[str, float]:
    """The filter's defaults overlaid with ``config.params``, validated.

    Raises :class:`MarineLifeError` naming the filter and its valid parameters for any unknown
    filter, unknown parameter or out-of-range value.
    """
    name = config.name
    if name not in DENOISE_DEFAULTS:
        raise MarineLifeError(
            f"denoise: unknown filter {name!r}",
            fix=f"choose one of {', '.join(DENOISE_FILTERS)}",
        )
    defaults = DENOISE_DEFAULTS[name]
    params = dict(config.params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise MarineLifeError(
            f"denoise: filter {name!r} has no parameter {unknown[0]!r}",
            fix=f"valid parameters for {name}: {valid}",
        )
    resolved: dict[str, float] = {}
    for key, default in defaults.items():
        value = params.get(key, default)
        resolved[key] = _check_value(name, key, value)
    return resolved


def _check_value(name: str, key: str, value: object) -> float:
    bad = MarineLifeError(
        f"denoise: {name}.{key}={value!r} is not valid",
        fix=_value_hint(key),
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise bad
    if key in _INT_PARAMS:
        if not number.is_integer() or not 1 <= number <= _MAX_WINDOW:
            raise bad
        if key in _ODD_PARAMS and int(number) % 2 == 0:
            raise bad
        return int(number)
    if number > 1000:
        raise bad
    return number


def _value_hint(key: str) -> str:
    if key in _ODD_PARAMS:
        return f"{key} must be an odd whole number from 1 to {_MAX_WINDOW}"
    if key in _INT_PARAMS:
        return f"{key} must be a whole number from 1 to {_MAX_WINDOW}"
    return f"{key} must be a number from 0 to 1000"


def apply_denoise(image: np.ndarray, config: DenoiseConfig) -> np.ndarray:
    """Filter an ``HxWx3`` uint8 RGB array; ``"none"`` returns the input object unchanged."""
    params = resolve_denoise_params(config)
    if config.name == "none":
        return image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_denoise needs HxWx3 uint8, got {image.shape} {image.dtype}")
    # OpenCV wants C-contiguous memory; a flipped/cropped view is not.
    src = np.ascontiguousarray(image)
    if config.name == "bilateral":
        out = cv2.bilateralFilter(
            src, int(params["d"]), float(params["sigma_color"]), float(params["sigma_space"])
        )
    elif config.name == "median":
        out = cv2.medianBlur(src, int(params["ksize"]))
    elif config.name == "gaussian":
        k = int(params["ksize"])
        out = cv2.GaussianBlur(src, (k, k), float(params["sigma"]))
    else:  # nlm
        # OpenCV converts to L*a*b* assuming BGR order; give it BGR so luminance is weighted right.
        bgr = np.ascontiguousarray(src[:, :, ::-1])
        out = cv2.fastNlMeansDenoisingColored(
            bgr,
            None,
            float(params["h"]),
            float(params["h_color"]),
            int(params["template"]),
            int(params["search"]),
        )[:, :, ::-1]
        out = np.ascontiguousarray(out)
    return out
