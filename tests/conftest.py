"""Shared fixtures: tiny generated image folders; never the network, never ../shared."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from marinelife.data.synthetic import make_synthetic_dataset  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """4 classes, 12/4/4 images per class at 32 px, split layout."""
    return make_synthetic_dataset(
        tmp_path / "data", num_classes=4, counts={"train": 12, "val": 4, "test": 4}, size=32
    )


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(
        tmp_path / "flat", num_classes=3, counts={"all": 20}, size=32, flat=True
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path → SHA-256 for every file under root (to prove user data never changes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
