"""Which dataset a result is on, and where an evaluation of another dataset is kept.

A run's own result (``RUN/test_metrics.json``, written by ``train``) is on the training data.
``evaluate RUN --data OTHER`` must never replace it: an evaluation of any other dataset goes to
``RUN/evals/<dataset-name>-<split>.json`` (+ ``.npy`` probabilities), with the dataset's path and
fingerprint inside, so several datasets can be evaluated side by side and the report shows each
in its own section.

"The same dataset" means the same resolved folder *and* the same fingerprint. The fingerprint is
SHA-256 over the split's sorted ``(path relative to the dataset root, size in bytes, mtime in ns)``
lines: stat calls only, so it costs nothing on 30,000 photos (hashing every file would read them
all), and it changes when a photo is added, removed, renamed, re-saved or moved to another class.
A copy that does not keep modification times (``cp -r`` without ``-p``) counts as changed: the
safe side, since it only means the result goes to ``evals/`` instead of replacing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.data.scan import Sample

log = logging.getLogger(__name__)
EVALS_DIR = "evals"
FINGERPRINT_KEY = "data_fingerprint"
FINGERPRINT_METHOD = "sha256 over sorted (relative path, size, mtime_ns) of the split's files"


def split_fingerprint(root: Path, samples: Sequence[Sample]) -> str:
    """``sha256:<hex>`` over the split's sorted (relative path, size, mtime_ns) lines."""
    root = Path(root).resolve()
    lines = []
    for sample in samples:
        path = Path(sample.path)
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # vanished meanwhile: still part of what the split named
            size, mtime = -1, -1
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:  # a symlink out of the tree: its own path is what identifies it
            rel = path.as_posix()
        lines.append(f"{rel}\t{size}\t{mtime}\n")
    digest = hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def dataset_record(root: Path, samples: Sequence[Sample]) -> dict[str, str]:
    """The keys every result file carries about its dataset."""
    return {
        "data": str(Path(root).resolve()),
        FINGERPRINT_KEY: split_fingerprint(root, samples),
        "data_fingerprint_method": FINGERPRINT_METHOD,
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def training_data(run_dir: Path) -> Path | None:
    """The dataset the run's own results are on (recorded by ``train`` in test_metrics.json)."""
    for name in ("test_metrics.json", "val_metrics.json"):
        recorded = (_read(run_dir / name) or {}).get("data")
        if recorded:
            return Path(recorded)
    return None


@dataclass
class Destination:
    """Where an evaluation goes and why; ``own`` is the run's ``<split>_metrics.json``."""

    metrics: Path
    probs: Path
    own: bool
    replaces: bool  # a file of the same dataset and split is already there
    note: str = ""  # why this destination, for the output


def _same_path(a: Path | str, b: Path | str) -> bool:
    return os.path.normcase(str(Path(a).resolve())) == os.path.normcase(str(Path(b).resolve()))


def safe_name(name: str) -> str:
    """A file-name-safe form of a folder name (letters of any script kept)."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "dataset"


def destination(run_dir: Path, record: dict[str, str], split: str) -> Destination:
    """The run's own file when ``record`` is the training data (path and fingerprint), else
    ``evals/<dataset>-<split>.json``; never a file holding another dataset's result."""
    own = run_dir / f"{split}_metrics.json"
    existing = _read(own) if own.is_file() else None
    trained_on = training_data(run_dir)
    if trained_on is None and existing is None:
        # A folder with no recorded dataset and no result yet: nothing to replace or confuse.
        return Destination(own, run_dir / f"{split}_probs.npy", True, False)
    if trained_on is not None and _same_path(trained_on, record["data"]):
        recorded_print = (existing or {}).get(FINGERPRINT_KEY)
        if recorded_print in (None, record[FINGERPRINT_KEY]):
            note = "the training data" if split == "test" else "the training data's split"
            return Destination(own, run_dir / f"{split}_probs.npy", True, existing is not None,
                               note)  # fmt: skip
        changed = (
            f"{record['data']} changed since {own.name} was written (fingerprint differs); "
            f"{own.name} keeps that result"
        )
    else:
        changed = ""
    return _eval_destination(run_dir, record, split, changed)


def _eval_destination(run_dir: Path, record: dict[str, str], split: str, note: str) -> Destination:
    folder = run_dir / EVALS_DIR
    stem = f"{safe_name(Path(record['data']).name)}-{safe_name(split)}"
    path = folder / f"{stem}.json"
    held = _read(path) if path.is_file() else None
    if held is not None and not _same_path(held.get("data", ""), record["data"]):
        # Another folder with the same name: a name of its own instead of replacing that one.
        tag = hashlib.sha256(record["data"].encode("utf-8")).hexdigest()[:8]
        path = folder / f"{stem}-{tag}.json"
        held = _read(path) if path.is_file() else None
    return Destination(path, path.with_suffix(".npy"), False, held is not None, note)


@dataclass
class Evaluation:
    """One ``evals/*.json``: its name (the file stem), metrics and probabilities."""

    name: str
    path: Path
    metrics: dict[str, Any]
    probs: np.ndarray | None = None

    @property
    def data(self) -> str:
        return str(self.metrics.get("data", ""))

    @property
    def split(self) -> str:
        return str(self.metrics.get("split", ""))


def read_evals(run_dir: Path) -> list[Evaluation]:
    """Every readable ``RUN/evals/*.json`` sorted by name; unreadable ones are named and skipped."""
    folder = Path(run_dir) / EVALS_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        metrics = _read(path)
        if metrics is None or "confusion_matrix" not in metrics or "classes" not in metrics:
            log.warning("ignoring %s (not a marinelife evaluation)", path)
            continue
        probs = None
        npy = path.with_suffix(".npy")
        if npy.is_file():
            try:
                probs = np.load(npy, allow_pickle=False)
            except (OSError, ValueError) as exc:
                log.warning("ignoring %s (%s)", npy, exc)
        found.append(Evaluation(path.stem, path, metrics, probs))
    return found
