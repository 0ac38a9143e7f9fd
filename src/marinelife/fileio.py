"""Generic file I/O every layer uses: atomic writes, safetensors weights, SHA-256 of a file.

A file written here is always the old one or the new one, never half. Weights are safetensors
(no code can run on load).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from marinelife.errors import MarineLifeError

if TYPE_CHECKING:
    import torch


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
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise MarineLifeError(
                f"refusing to save {what}: parameter '{name}' has NaN/inf values",
                fix="lower the learning rate or use --set skip_nonfinite=true",
            )


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    # torch and safetensors load on first use: text-only callers of this module stay light.
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    assert_finite(state, path.name)
    atomic_write_bytes(path, save(state))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
