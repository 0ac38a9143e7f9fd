"""Read what a run folder holds (config, history, split metrics, probabilities, bundle info).

Report, compare and cv all read run folders; each file is optional here (a bundle folder has no
``metrics.csv``, an unevaluated run no ``test_metrics.json``) and the caller decides what it needs.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.config import TrainConfig, load_config
from marinelife.errors import MarineLifeError
from marinelife.evaluate.evals import Evaluation, read_evals

log = logging.getLogger(__name__)
PLAN_FILE = "plan.json"  # written by the trainer at the start of each stage


@dataclass
class RunData:
    run_dir: Path
    config: TrainConfig | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    split: str | None = None  # the split ``metrics`` describes
    metrics: dict[str, Any] | None = None
    probs: np.ndarray | None = None
    info: Any = None  # marinelife.models.bundle.ModelInfo, when model.json is present
    # plan.json as training recorded it: world size, batch size, per stage its settings,
    # steps per epoch and LR curve (absent for runs trained before the record existed).
    plan: dict[str, Any] | None = None
    # Evaluations of other datasets (RUN/evals/*.json), apart from the run's own result.
    evals: list[Evaluation] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def classes(self) -> list[str]:
        if self.metrics and self.metrics.get("classes"):
            return list(self.metrics["classes"])
        return list(self.info.classes) if self.info is not None else []

    def require_metrics(self) -> dict[str, Any]:
        if self.metrics is None:
            raise MarineLifeError(
                "has no test_metrics.json",
                path=self.run_dir,
                fix=f"run `marinelife evaluate {self.run_dir} --data DATA` first",
            )
        return self.metrics


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MarineLifeError(f"unreadable JSON ({exc})", path=path) from exc


def read_history(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` rows with numbers as floats (``stage`` stays text); [] when absent."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                rows.append({k: (v if k == "stage" else float(v)) for k, v in row.items()})
            except (TypeError, ValueError) as exc:
                raise MarineLifeError(f"malformed row {row} ({exc})", path=path) from exc
    return rows


def load_run(run_dir: str | Path, split: str | None = None) -> RunData:
    """Everything available in ``run_dir``; ``split`` defaults to test, else val."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MarineLifeError(
            "is not a run folder", path=run_dir, fix="pass a folder written by `marinelife train`"
        )
    data = RunData(run_dir)
    if (run_dir / "config.yaml").is_file():
        data.config = load_config(run_dir / "config.yaml")
    data.history = read_history(run_dir / "metrics.csv")
    if (run_dir / PLAN_FILE).is_file():
        data.plan = _read_json(run_dir / PLAN_FILE)
    if (run_dir / "model.json").is_file():
        from marinelife.models.bundle import read_model_info

        data.info, _ = read_model_info(run_dir)
    candidates = [split] if split else ["test", "val"]
    for name in candidates:
        path = run_dir / f"{name}_metrics.json"
        if path.is_file():
            data.split, data.metrics = name, _read_json(path)
            data.probs = _read_probs(run_dir / f"{name}_probs.npy", data.metrics)
            break
    data.evals = read_evals(run_dir)
    if not data.history and data.metrics is None and data.info is None:
        raise MarineLifeError(
            "holds no training history, metrics or model.json",
            path=run_dir,
            fix="pass a folder written by `marinelife train`",
        )
    return data


def _read_probs(path: Path, metrics: dict[str, Any]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s (%s)", path, exc)
        return None
    expected = (len(metrics.get("targets", [])), len(metrics.get("classes", [])))
    if probs.shape != expected:
        log.warning("ignoring %s: shape %s, expected %s (stale file?)", path, probs.shape, expected)
        return None
    return probs
