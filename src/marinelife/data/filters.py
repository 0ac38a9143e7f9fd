"""The photo filters of preprocessing (enhance, denoise): their one order and their config checks.

Both the eval path (:func:`marinelife.data.preprocess.preprocess_views`) and the train path
(:class:`marinelife.data.transforms.TrainTransform`) call :func:`apply_filters`, so training,
evaluation, predict, serve and export checks cannot disagree on the order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from marinelife.config import DenoiseConfig, EnhanceConfig
from marinelife.data.denoise import apply_denoise, resolve_denoise_params
from marinelife.data.enhance import apply_enhance, resolve_enhance_params
from marinelife.errors import MarineLifeError

FilterConfig = DenoiseConfig | EnhanceConfig
# The preprocessing keys that hold a filter; both may be absent from an older model.json (none).
FILTER_KEYS: dict[str, type[DenoiseConfig] | type[EnhanceConfig]] = {
    "denoise": DenoiseConfig,
    "enhance": EnhanceConfig,
}
_RESOLVERS: dict[str, Callable[[Any], dict[str, float]]] = {
    "denoise": resolve_denoise_params,
    "enhance": resolve_enhance_params,
}


def apply_filters(image: np.ndarray, enhance: EnhanceConfig, denoise: DenoiseConfig) -> np.ndarray:
    """Enhancement, then denoising, on an ``HxWx3`` uint8 RGB array at the working scale.

    Why enhance first: red compensation and CLAHE amplify the noise of the channel or region
    they boost (underwater, red is the weakest and noisiest channel), and the denoiser then
    removes that amplified noise too; bilateral's and non-local means' colour distances are also
    measured on the corrected colours the network will see. The other way round, the
    enhancement would re-amplify the noise the denoiser had just removed.
    """
    return apply_denoise(apply_enhance(image, enhance), denoise)


def resolved_filter(key: str, value: Any, where: str) -> FilterConfig:
    """A private copy of ``value`` with every parameter resolved (defaults filled in, checked).

    Later edits to the caller's config cannot change the copy, and model.json records the exact
    filter values used.
    """
    cls = FILTER_KEYS[key]
    if not isinstance(value, cls):
        raise MarineLifeError(f"{where}: {key} must be a {cls.__name__}")
    return cls(value.name, dict(_RESOLVERS[key](value)))


def filter_from_dict(value: Any, key: str, where: str) -> FilterConfig:
    """The filter config of a model.json ``preprocess`` entry (``{"name", "params"}``)."""
    if not isinstance(value, dict) or set(value) - {"name", "params"}:
        raise MarineLifeError(f"{where}: {key} must be a mapping with 'name' and 'params'")
    name = value.get("name", "none")
    params = value.get("params") or {}
    if not isinstance(name, str) or not isinstance(params, dict):
        raise MarineLifeError(f"{where}: {key} name must be a string and params a mapping")
    return FILTER_KEYS[key](name=name, params={str(k): v for k, v in params.items()})
