"""marinelife: photos of marine life in, a trained, evaluated, deployable classifier out.

    import marinelife as ml
    run = ml.train("data", epochs=6)
    ml.load(run.path).predict("dive.jpg", top_k=3)

Names load on first use, so ``import marinelife`` stays light (no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

from marinelife._version import __version__

_API = (
    "CheckReport", "Model", "Prediction", "Run", "audit", "check", "compare", "cv", "demo",
    "download", "explain", "export", "inspect", "load", "recipe", "recipes", "serve", "split",
    "train", "video_summary",
)  # fmt: skip

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("marinelife.api"), name)
    raise AttributeError(f"module 'marinelife' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
