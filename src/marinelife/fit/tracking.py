"""Per-epoch scalars to TensorBoard event files when ``tensorboard`` is installed (optional extra).

``metrics.csv`` stays the record of a run; this only mirrors it under ``RUN_DIR/tensorboard/`` so
``tensorboard --logdir runs`` can overlay many runs. Without the package every call is a no-op.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"
# metrics.csv column → TensorBoard tag (grouped so train and val share a chart section).
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "val_f1": "macro_f1/val",
    "lr": "lr",
    "train_samples_per_s": "speed/train_samples_per_s",
    "seconds": "speed/epoch_seconds",
}
_writers: dict[Path, Any] = {}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _writer(run_dir: Path):
    key = Path(run_dir).resolve()
    if key not in _writers:
        from torch.utils.tensorboard import SummaryWriter

        _writers[key] = SummaryWriter(log_dir=str(key / TENSORBOARD_DIR))
    return _writers[key]


def log_epoch(run_dir: str | Path, row: dict[str, Any]) -> bool:
    """Write one ``metrics.csv`` row as scalars at step ``row["epoch"]``; False if unavailable."""
    if not tensorboard_available():
        return False
    writer = _writer(Path(run_dir))
    step = int(row["epoch"])
    for column, tag in SCALARS.items():
        value = row.get(column)
        if isinstance(value, int | float):
            writer.add_scalar(tag, float(value), step)
    writer.add_text("stage", str(row.get("stage", "")), step)
    writer.flush()
    return True


def close(run_dir: str | Path | None = None) -> None:
    """Close the writer of ``run_dir`` (all writers when None)."""
    keys = list(_writers) if run_dir is None else [Path(run_dir).resolve()]
    for key in keys:
        writer = _writers.pop(key, None)
        if writer is not None:
            writer.close()


atexit.register(close)
