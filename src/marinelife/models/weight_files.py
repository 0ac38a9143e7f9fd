"""Weight files: reading a state dict safely, loading it into a backbone, and its digest.

``torch.load`` runs with ``weights_only=True`` only: a pickle carrying code is refused, never run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from marinelife.errors import MarineLifeError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")
# Prefixes wrappers add to every key: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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
