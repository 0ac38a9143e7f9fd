"""Comparing and cross-validating runs, explaining and auditing them, serving, the demo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marinelife.config import TrainConfig, available_recipes, load_recipe_data, resolve_config
from marinelife.errors import MarineLifeError


def compare(runs: Sequence[str | Path], *, out: str | Path | None = None, speed: bool = True):
    """Test accuracy and macro-F1 with 95 % intervals, McNemar tests for every pair of runs
    evaluated on the same photos; ``out`` also writes Markdown, HTML and JSON there.

    Returns a :class:`~marinelife.evaluate.compare.Comparison` (``.runs``, ``.pairs``).
    """
    from marinelife.evaluate.compare import run_compare

    return run_compare([Path(r) for r in runs], out=Path(out) if out else None, speed=speed)


def cv(
    data: str | Path,
    recipe: str = "two-stage-lite",
    *,
    folds: int = 5,
    name: str | None = None,
    project: str | Path = "runs",
    inner_val: float = 0.15,
    config: TrainConfig | None = None,
    groups: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Duplicate-aware stratified k-fold cross-validation over train+val: one run per fold
    under ``project/name``; returns the summary (mean ± sd, pooled out-of-fold metrics).
    ``groups`` (a group source, as for :func:`marinelife.split`; paths relative to ``data``)
    keeps every site/dive/day inside one fold."""
    from marinelife.pipeline.cross_validation import run_cv

    config = config or resolve_config(recipe, extra=overrides, where="cv()")
    project = Path(project)
    out = project / name if name else None
    if (
        out is not None
        and out.is_dir()
        and not (out / "folds.csv").is_file()
        and any(out.iterdir())
    ):
        raise MarineLifeError("folder exists and is not a cv folder", path=out,
                              fix="choose another --name")  # fmt: skip
    return run_cv(Path(data), config, folds=folds, out_dir=out, runs_dir=project,
                  inner_val=inner_val, groups=groups)  # fmt: skip


def explain(
    model: str | Path,
    image: str | Path,
    *,
    out: str | Path | None = None,
    target: str | None = None,
) -> Path:
    """Grad-CAM: which part of ``image`` made the model say what it said (a PNG)."""
    from marinelife.evaluate.explain import run_explain

    return run_explain(Path(model), Path(image), out=Path(out) if out else None, target=target)


def audit(run: str | Path, data: str | Path, *, out: str | Path | None = None) -> Path:
    """Suspected label errors (cleanlab on out-of-sample probabilities): a CSV and a page."""
    from marinelife.evaluate.audit import run_audit

    return run_audit(Path(run), Path(data), out=Path(out) if out else None)


def serve(
    model: str | Path,
    *,
    max_upload_mb: float = 100.0,
    max_file_mb: float = 25.0,
    max_files: int = 16,
    top_k: int = 3,
    **options: Any,
) -> int:
    """Serve ``model`` over HTTP (upload page + JSON API) until interrupted; see docs/deploy.md.

    ``options``: ``host``, ``port``, ``backend``, ``api_key``, ``reject``, ``threads``,
    ``workers`` (those of ``marinelife serve``).
    """
    from marinelife.infer.server import ServeSettings, run_server

    limits = ServeSettings(
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_file_bytes=int(max_file_mb * 2**20),
        max_files=max_files,
        top_k=top_k,
    )
    return run_server(model, settings=limits, **options)


def demo(data: str | Path | None = None, *, project: str | Path = "runs") -> Path:
    """The whole job on built-in synthetic shapes (or ``data``), offline; returns the run."""
    from marinelife.pipeline.demo import run_demo

    return run_demo(Path(data) if data else None, runs_dir=Path(project))


def recipes() -> dict[str, dict[str, str]]:
    """Every shipped recipe: name → its architecture and description."""
    table = {}
    for name in available_recipes():
        _, data = load_recipe_data(name)
        table[name] = {
            "architecture": str(data.get("architecture", "")),
            "description": " ".join(str(data.get("description", "")).split()),
        }
    return table


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """A recipe resolved with ``overrides`` (checked like ``--set``), as training would use it."""
    return resolve_config(name, extra=overrides, where="recipe()")
