"""Atomic checkpoint files: a checkpoint on disk is always the old one or the new one, never half.

Weights are safetensors (no code can run on load); the resumable training state is a plain dict
of tensors and numbers saved with ``torch.save`` and read back only with ``weights_only=True``.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from marinelife.errors import MarineLifeError

log = logging.getLogger(__name__)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _read_umask()


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], None],
    *,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write through a temp file in the same folder, fsync, then ``os.replace`` over ``path``.

    ``before_replace`` runs once the new content is safely on disk, just before it takes over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What atomic_write's mkstemp names look like: ".NAME.<8 random chars>.tmp".
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writes that a killed process never finished; return them.

    They are never read (the real file is replaced only once its temp file is complete), but a
    run killed mid-write many times would otherwise collect a checkpoint-sized file per kill.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if _TEMP_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def assert_finite(state: dict[str, torch.Tensor], what: str) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise MarineLifeError(
                f"refusing to save {what}: parameter '{name}' has NaN/inf values",
                fix="lower the learning rate or use --set skip_nonfinite=true",
            )


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    assert_finite(state, path.name)
    atomic_write_bytes(path, save(state))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise MarineLifeError("weights file not found", path=path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MarineLifeError(
            f"corrupt or truncated weights file ({exc})",
            path=path,
            fix="retrain, or restore the file from a backup",
        ) from exc


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_training_state(state: dict[str, Any], path: Path) -> None:
    """Save ``state``; the checkpoint it replaces is kept as ``NAME.prev.ckpt`` for fallback.

    The old checkpoint is rotated only after the new one is fully written, so a failed write
    (disk full, quota) leaves ``path`` itself untouched.
    """
    if isinstance(state.get("model"), dict):
        assert_finite(state["model"], path.name)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()

    def rotate() -> None:
        if path.exists():
            os.replace(path, previous_path(path))

    atomic_write(path, lambda handle: handle.write(data), before_replace=rotate)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MarineLifeError(
            f"unreadable checkpoint ({reason})",
            path=path,
            fix="delete it to start over, or restore it from a backup",
        ) from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise MarineLifeError("not a marinelife training checkpoint", path=path)
    return state


def load_training_state(path: Path) -> dict[str, Any]:
    """Load ``path``; when it is missing or damaged, fall back to ``NAME.prev.ckpt`` if good."""
    prev = previous_path(path)
    try:
        if not path.exists():
            raise MarineLifeError("no checkpoint to resume from", path=path)
        return _load_state(path)
    except MarineLifeError as exc:
        if prev.exists():
            log.warning("%s; falling back to %s", exc, prev.name)
            return _load_state(prev)
        raise


def rng_state() -> dict[str, Any]:
    """Every random generator the training loop touches, as tensors and plain numbers."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python": torch.tensor(py_internal, dtype=torch.int64),
        "python_meta": [int(py_version), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["numpy_gauss"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], has_gauss, gauss))
    version, py_gauss = state["python_meta"]
    random.setstate((version, tuple(int(x) for x in state["python"].tolist()), py_gauss))
