"""Training runs in Python: ``run = ml.train(data, epochs=6)``, then ``run.evaluate()`` etc."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from marinelife.config import TrainConfig, load_config, resolve_config
from marinelife.errors import MarineLifeError

DEFAULT_RECIPE = "two-stage-lite"


class Run:
    """A run folder (``runs/NAME``): its config, history and results, and what to do next."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise MarineLifeError(
                "is not a run folder", path=self.path, fix="pass a folder written by train"
            )

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @cached_property
    def config(self) -> TrainConfig:
        """The resolved config the run was trained with (``config.yaml``)."""
        return load_config(self.path / "config.yaml")

    @property
    def test_metrics(self) -> dict[str, Any]:
        """``test_metrics.json``: accuracy, macro-F1, per-class scores, confusion matrix."""
        path = self.path / "test_metrics.json"
        return json.loads(path.read_text("utf-8")) if path.is_file() else {}

    @property
    def evals(self) -> dict[str, dict[str, Any]]:
        """Evaluations of other datasets, ``RUN/evals/<dataset>-<split>.json`` by file stem:
        each with its ``data`` path, ``data_fingerprint`` and metrics (never the run's own
        ``test_metrics``, which stays the training data's)."""
        from marinelife.evaluate.evals import read_evals

        return {ev.name: ev.metrics for ev in read_evals(self.path)}

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per epoch from ``metrics.csv`` (stage, losses, accuracies, lr, seconds)."""
        from marinelife.evaluate.rundata import read_history

        return read_history(self.path / "metrics.csv")

    def _data(self, data: str | Path | None) -> Path:
        if data is not None:
            return Path(data)
        recorded = self.test_metrics.get("data")
        if not recorded:
            raise MarineLifeError(
                "the run does not record its dataset", path=self.path, fix="pass data=FOLDER"
            )
        return Path(recorded)

    def evaluate(
        self,
        data: str | Path | None = None,
        *,
        split: str = "test",
        tta: str | None = None,
        report: bool = False,
        by_group: str | Path | None = None,
    ) -> dict[str, Any]:
        """Metrics on ``split`` of ``data`` (default: the dataset the run was trained on).

        On the training data they are the run's own ``<split>_metrics.json``; any other dataset
        goes to ``RUN/evals/<dataset>-<split>.json`` (see :attr:`evals`), so ``test_metrics``
        stays the training data's. The returned dict is what was written. ``by_group``: a group
        source (``"DATA/groups.csv"``, ``"regex:..."``, ``"level:1"``, ``"exif-date"``) adds
        ``by_group``: accuracy and macro-F1 per site/group with intervals, worst first."""
        from marinelife.evaluate.evaluate_split import run_evaluate

        return run_evaluate(self.path, self._data(data), split=split, tta=tta or "none",
                            report=report, by_group=by_group)  # fmt: skip

    def report(
        self, data: str | Path | None = None, *, embed: bool = False, gradcam: bool = True
    ) -> Path:
        """Write ``report.html`` + ``figures/``; returns the page."""
        from marinelife.evaluate.report import build_report

        source = self._data(data) if data is not None or self.test_metrics.get("data") else None
        if source is not None and not source.exists():
            source = None  # the training data moved: the report still has the run's own results
        return build_report(self.path, data=source, embed=embed, gradcam=gradcam)

    def export(
        self,
        format: str = "onnx",  # noqa: A002 - the name Ultralytics and the CLI use
        *,
        int8: bool = False,
        data: str | Path | None = None,
        out: str | Path | None = None,
        max_drop: float = 1.0,
    ) -> Path:
        """A verified ONNX copy (``RUN/export/model.onnx`` + model.json); ``int8`` quantizes,
        calibrated and accuracy-checked on ``data`` (default: the training data)."""
        source = self._data(data) if int8 or data is not None else None
        return export(self.path, format, int8=int8, data=source, out=out, max_drop=max_drop).path

    def load(self, **kwargs: Any):
        """The trained model, ready to ``predict`` (see :func:`marinelife.load`)."""
        from marinelife.api.model import load

        return load(self.path, **kwargs)


def train(
    data: str | Path,
    recipe: str = DEFAULT_RECIPE,
    *,
    name: str | None = None,
    project: str | Path = "runs",
    resume: bool = False,
    config: TrainConfig | None = None,
    **overrides: Any,
) -> Run:
    """Train ``recipe`` on ``data`` into ``project/name`` and return the :class:`Run`.

    ``overrides`` are config keys as keyword arguments (``epochs=6``,
    ``augment={"rotation": 10}``), checked exactly like ``--set`` (an unknown key names the
    closest valid one). ``resume=True`` continues ``project/name`` from its last checkpoint
    with its own config (only ``device`` may change). ``config`` gives a resolved config
    instead of ``recipe`` + ``overrides``.
    """
    from marinelife.pipeline.training import resume_config, run_training

    project = Path(project)
    if resume:
        if name is None:
            raise MarineLifeError("resume needs name= (the run folder to continue)")
        ignored = sorted(k for k in overrides if k != "device")
        config = resume_config(project / name, device=overrides.get("device"), ignored=ignored)
    elif config is None:
        config = resolve_config(recipe, extra=overrides, where="train()")
    run_dir, _ = run_training(Path(data), config, runs_dir=project, name=name, resume=resume)
    return Run(run_dir)


def export(
    model: str | Path,
    format: str = "onnx",  # noqa: A002 - the name Ultralytics and the CLI use
    *,
    int8: bool = False,
    data: str | Path | None = None,
    split: str = "test",
    out: str | Path | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    max_drop: float = 1.0,
):
    """Export a run folder or bundle to ONNX, verified against PyTorch before anything is
    written; ``int8`` quantizes and refuses to write when top-1 on ``data``'s ``split`` drops
    more than ``max_drop`` points. Returns the :class:`~marinelife.infer.export.ExportReport`."""
    from marinelife.infer.export import export_onnx
    from marinelife.models.onnx_export import DEFAULT_OPSET

    if format != "onnx":
        raise MarineLifeError(f"--format {format!r} is not supported (use onnx)")
    return export_onnx(
        Path(model),
        Path(out) if out else None,
        opset=opset or DEFAULT_OPSET,
        dynamic_batch=dynamic_batch,
        quantize="int8" if int8 else None,
        data=Path(data) if data else None,
        split=split,
        max_drop=max_drop,
        quiet=True,
    )
