"""The public Python API: ``import marinelife as ml``.

One verb per job, the same ones as the command line (which is a thin layer over these):
``ml.check``, ``ml.split``, ``ml.inspect``, ``ml.download``, ``ml.train`` → :class:`Run`
(``.evaluate`` ``.report`` ``.export`` ``.load``), ``ml.load`` → :class:`Model` (``.predict``
on photos, videos and arrays, ``.to_dwc``; ``ml.video_summary``),
``ml.compare``, ``ml.cv``, ``ml.explain``, ``ml.audit``, ``ml.serve``, ``ml.demo``,
``ml.recipes``. A walk-through: docs/python-api.md.
"""

from marinelife.api.datasets import CheckReport, check, download, inspect, split
from marinelife.api.model import Model, Prediction, load, video_summary
from marinelife.api.results import audit, compare, cv, demo, explain, recipe, recipes, serve
from marinelife.api.runs import Run, export, train

__all__ = [
    "CheckReport",
    "Model",
    "Prediction",
    "Run",
    "audit",
    "check",
    "compare",
    "cv",
    "demo",
    "download",
    "export",
    "explain",
    "inspect",
    "load",
    "recipe",
    "recipes",
    "serve",
    "split",
    "train",
    "video_summary",
]
