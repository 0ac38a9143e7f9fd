"""The one preprocessing function shared by evaluation, predict, export checks and serve.

decode (:func:`~marinelife.data.image_io.load_image`: EXIF, any mode → RGB) → resize the shorter
side to ``input_size / crop_pct`` → enhance → denoise → centre-crop ``input_size`` → normalise →
float32 CHW.

Resize and crop follow timm's eval transform exactly (torchvision ``Resize`` on a PIL image, then
``CenterCrop``), with the model's own mean/std/interpolation/crop_pct from
``timm.data.resolve_data_config``, so a pretrained backbone sees what it was trained on.

Enhancement and denoising run *after* the resize, at the network's working scale: filter sizes
then mean the same thing for a 400 px crop and a 24 MP photo, JPEG draft decoding (which already
shrinks big photos) cannot change what the filters do, and non-local means stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from marinelife.config import DenoiseConfig, EnhanceConfig
from marinelife.data.filters import FILTER_KEYS, apply_filters, filter_from_dict, resolved_filter
from marinelife.data.image_io import load_image, to_rgb
from marinelife.errors import MarineLifeError

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Bounds that reject a hostile or corrupt model.json before it can allocate gigabytes.
_MIN_SIZE, _MAX_SIZE = 8, 4096
_MIN_CROP_PCT = 0.25
_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "denoise", "enhance")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to turn a decoded photo into the network's input tensor."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)

    def __post_init__(self) -> None:
        # Validated on every construction, so no code path can hold an unusable config.
        where = "preprocessing config"
        size = self.input_size
        whole = isinstance(size, int) and not isinstance(size, bool)
        if not whole or not _MIN_SIZE <= size <= _MAX_SIZE:
            raise MarineLifeError(
                f"{where}: input_size={size!r} must be a whole number from {_MIN_SIZE} to "
                f"{_MAX_SIZE}"
            )
        object.__setattr__(self, "mean", _triple(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _triple(self.std, "std", positive=True))
        if self.interpolation not in INTERPOLATIONS:
            raise MarineLifeError(
                f"{where}: interpolation={self.interpolation!r} is not one of "
                f"{', '.join(INTERPOLATIONS)}"
            )
        crop = self.crop_pct
        if (
            isinstance(crop, bool)
            or not isinstance(crop, int | float)
            or not math.isfinite(crop)
            or not _MIN_CROP_PCT <= crop <= 1.0
        ):
            raise MarineLifeError(
                f"{where}: crop_pct={crop!r} must be a number from {_MIN_CROP_PCT} to 1"
            )
        object.__setattr__(self, "crop_pct", float(crop))
        for key in FILTER_KEYS:  # resolved private copies: model.json records exact values
            object.__setattr__(self, key, resolved_filter(key, getattr(self, key), where))

    @property
    def scale_size(self) -> int:
        """Shorter side before the centre crop (timm: ``floor(input_size / crop_pct)``)."""
        return math.floor(self.input_size / self.crop_pct)

    @property
    def draft_size(self) -> tuple[int, int]:
        """JPEG draft target: decoding never goes below what the resize needs."""
        return (self.scale_size, self.scale_size)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "denoise": {"name": self.denoise.name, "params": dict(self.denoise.params)},
        }
        # Written only when on: a bundle without enhancement stays exactly as before (older
        # releases load it, feature-cache keys are unchanged), while one with it is refused by
        # an older release (unknown key) instead of being silently run without it.
        if self.enhance.name != "none":
            data["enhance"] = {"name": self.enhance.name, "params": dict(self.enhance.params)}
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Build from :meth:`to_dict` output (e.g. model.json); anything malformed is refused."""
        where = "preprocessing config"
        if not isinstance(d, dict):
            raise MarineLifeError(f"{where}: must be a mapping, got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in _KEYS)
        if unknown:
            raise MarineLifeError(
                f"{where}: unknown key {unknown[0]!r}", fix=f"valid keys: {', '.join(_KEYS)}"
            )
        missing = [k for k in _KEYS if k not in d and k not in FILTER_KEYS]
        if missing:
            raise MarineLifeError(f"{where}: missing key {missing[0]!r}")
        filters = {key: filter_from_dict(d.get(key, {}), key, where) for key in FILTER_KEYS}
        interpolation = d["interpolation"]
        if not isinstance(interpolation, str):
            raise MarineLifeError(f"{where}: interpolation must be a string")
        return cls(
            input_size=d["input_size"],
            mean=d["mean"],
            std=d["std"],
            interpolation=interpolation,
            crop_pct=d["crop_pct"],
            **filters,
        )


def _triple(value: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    bad = MarineLifeError(
        f"preprocessing config: {name}={value!r} must be three "
        + ("positive numbers" if positive else "numbers")
    )
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise bad
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise bad
        if positive and v <= 0:
            raise bad
        out.append(float(v))
    return (out[0], out[1], out[2])


def _timm_config_owner(model: torch.nn.Module) -> torch.nn.Module:
    # A classifier wrapping a timm backbone: the backbone carries the pretrained data config.
    if getattr(model, "pretrained_cfg", None):
        return model
    for module in model.modules():
        if getattr(module, "pretrained_cfg", None):
            return module
    return model


def preprocess_config_for_model(
    model: torch.nn.Module,
    *,
    input_size: int = 0,
    denoise: DenoiseConfig | None = None,
    enhance: EnhanceConfig | None = None,
) -> PreprocessConfig:
    """The model's own data config (timm) plus our filter choices; ``input_size=0``: its default."""
    import timm.data

    data = timm.data.resolve_data_config(_size_args(input_size), model=_timm_config_owner(model))
    return _from_timm_data_config(data, input_size, denoise, enhance)


def preprocess_config_for_architecture(
    architecture: str,
    *,
    input_size: int = 0,
    denoise: DenoiseConfig | None = None,
    enhance: EnhanceConfig | None = None,
) -> PreprocessConfig:
    """Like :func:`preprocess_config_for_model` from a timm name, without building the model;
    an ensemble ``"a+b"`` takes its largest member's, as ``EnsembleBackbone`` does."""
    import timm.data
    import timm.models

    if "+" in architecture:
        size = lambda n: getattr(timm.models.get_pretrained_cfg(n), "input_size", (0,))[-1]  # noqa: E731
        architecture = max(architecture.split("+"), key=size)
    pretrained_cfg = timm.models.get_pretrained_cfg(architecture)
    if pretrained_cfg is None:
        if not timm.is_model(architecture):
            raise MarineLifeError(
                f"unknown architecture {architecture!r}", fix="use a timm model name"
            )
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
        return preprocess_config_for_model(
            model, input_size=input_size, denoise=denoise, enhance=enhance
        )
    data = timm.data.resolve_data_config(
        _size_args(input_size), pretrained_cfg=pretrained_cfg.to_dict()
    )
    return _from_timm_data_config(data, input_size, denoise, enhance)


def _size_args(input_size: int) -> dict[str, Any]:
    return {"input_size": (3, int(input_size), int(input_size))} if input_size else {}


def _from_timm_data_config(
    data: dict[str, Any],
    input_size: int,
    denoise: DenoiseConfig | None,
    enhance: EnhanceConfig | None = None,
) -> PreprocessConfig:
    _, height, width = data["input_size"]
    return PreprocessConfig(
        input_size=int(input_size or max(height, width)),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
        interpolation=str(data["interpolation"]),
        crop_pct=float(data["crop_pct"]),
        denoise=dataclasses.replace(denoise) if denoise else DenoiseConfig(),
        enhance=dataclasses.replace(enhance) if enhance else EnhanceConfig(),
    )


# ---------------------------------------------------------------------------------------------
# pixels


def as_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL RGB image from a PIL image of any mode, or an ``HxW``/``HxWx3`` uint8 array."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWx3 uint8 array, got {array.shape} {array.dtype}")
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] != 3:
        raise ValueError(f"expected 3 channels (RGB), got {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def resize_shorter_side(image: Image.Image, size: int, interpolation: str) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: shorter side → ``size``, aspect kept."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), INTERPOLATIONS[interpolation])


# Pixels the eval resize may produce before only a window around the centre crop is resized:
# far above any photo's (a 20:1 panorama at 256 px is 1.3 M), far below a memory bomb.
_MAX_RESIZED_PIXELS = 4_000_000


def resize_for_center_crop(
    image: Image.Image, size: int, crop: int, interpolation: str
) -> Image.Image:
    """:func:`resize_shorter_side`, except that a pathological strip resizes only its centre.

    A 1x2,000,000 PNG is 6 kB on disk, yet :func:`resize_shorter_side` would make it
    36x72,000,000 pixels (7.8 GB). Past ``_MAX_RESIZED_PIXELS`` only a window of ``4 * size``
    along the long side is resized (PIL's ``box``: the same sampling positions and filter
    support), placed so that :func:`center_crop` of it is the full image's centre crop and wide
    enough for a denoise filter's neighbours. (PIL may then run its two passes in the other
    order, so pixels can differ by a few levels from the full resize; photos never get here.)
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    window = 4 * size + (4 * size - crop) % 2  # even margins: no rounding in the window's crop
    if new_long * size <= _MAX_RESIZED_PIXELS or new_long <= window + 2:
        return resize_shorter_side(image, size, interpolation)
    start = int(round((new_long - crop) / 2.0)) - (window - crop) // 2
    scale = long / new_long
    lo, hi = max(0.0, start * scale), min(float(long), (start + window) * scale)
    if width <= height:
        return image.resize((size, window), INTERPOLATIONS[interpolation], box=(0, lo, width, hi))
    return image.resize((window, size), INTERPOLATIONS[interpolation], box=(lo, 0, hi, height))


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop`` offsets (round half to even, as there)."""
    height, width = array.shape[:2]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return array[top : top + size, left : left + size]


def _normalise(array: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(x/255 - mean) / std`` over the last axis, in torchvision's float32 operation order."""
    x = np.asarray(array, dtype=np.float32) / np.float32(255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return x


@functools.lru_cache(maxsize=16)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[3, 256]`` float32: every uint8 value of each channel, normalised."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    table = np.ascontiguousarray(_normalise(values, mean, std).T)
    table.setflags(write=False)
    return table


def to_normalised_tensor(
    array: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """``HxWx3`` uint8 → float32 CHW, ``(x/255 - mean) / std`` (torchvision ToTensor+Normalize).

    A uint8 channel has only 256 values: they are normalised once, with the same float32
    operations in the same order as torchvision (so the result is bit-identical), and each pixel
    is looked up straight into CHW order — half the time of the arithmetic, single-threaded, which
    is ~10x faster for one image on a busy CPU than torch's intra-op thread pool.
    """
    if array.dtype != np.uint8:  # e.g. a float image from a custom pipeline: plain arithmetic
        x = _normalise(array, mean, std)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
    table = _normalise_table(tuple(mean), tuple(std))
    height, width, _ = array.shape
    out = np.empty((3, height, width), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], array[..., channel], out=out[channel])
    return torch.from_numpy(out)


def five_crops(array: np.ndarray, size: int) -> list[np.ndarray]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` crops (torchvision)."""
    height, width = array.shape[:2]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    crops = [array[y : y + size, x : x + size] for y, x in corners]
    return [*crops, center_crop(array, size)]


CROPS = ("center", "five")


def preprocess_views(
    image: Image.Image | np.ndarray, config: PreprocessConfig, *, crops: str = "center"
) -> torch.Tensor:
    """The eval-time path, one order for every use: RGB → resize → enhance → denoise → crop(s)
    → normalise → float32 ``[views, 3, S, S]``.

    ``crops="center"`` is the single centre crop every prediction uses; ``"five"`` adds the
    four corners (five-crop test-time augmentation), so it needs the whole resized photo.
    """
    if crops not in CROPS:
        raise ValueError(f"crops={crops!r} is not one of {CROPS}")
    rgb = as_rgb_image(image)
    if crops == "center":
        resized = resize_for_center_crop(
            rgb, config.scale_size, config.input_size, config.interpolation
        )
    else:
        resized = resize_shorter_side(rgb, config.scale_size, config.interpolation)
    array = np.asarray(resized, dtype=np.uint8)
    # Filter before cropping so the filters see real neighbours at the crop's edges and the
    # enhancement's statistics are those of the whole photo, as in training.
    array = apply_filters(array, config.enhance, config.denoise)
    windows = (
        [center_crop(array, config.input_size)]
        if crops == "center"
        else five_crops(array, config.input_size)
    )
    return torch.stack([to_normalised_tensor(w, config.mean, config.std) for w in windows])


def preprocess_image(image: Image.Image | np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """:func:`preprocess_views` with the centre crop: the float32 ``3xSxS`` network input."""
    return preprocess_views(image, config)[0]


def load_and_preprocess(
    source: str | Path | bytes, config: PreprocessConfig, **load_kwargs: Any
) -> torch.Tensor:
    """Decode any supported image file or bytes and return the network input tensor.

    JPEGs much larger than needed are decoded at reduced scale (``draft``), never below the
    resize target, so big phone photos load several times faster.
    """
    load_kwargs.setdefault("draft_size", config.draft_size)
    return preprocess_image(load_image(source, **load_kwargs), config)
