"""The resumable training state (``last.ckpt``): written atomically, rotated, restored with RNGs.

The state is a plain dict of tensors and numbers saved with ``torch.save`` and read back only with
``weights_only=True``; weights files themselves are :mod:`marinelife.fileio`'s safetensors.
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marinelife.errors import MarineLifeError
from marinelife.fileio import assert_finite, atomic_write

log = logging.getLogger(__name__)


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
