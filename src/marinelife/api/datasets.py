"""Datasets: check a folder, split it leak-free, look at it, download the Kaggle set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marinelife.data.check import build_report, discover, format_report
from marinelife.data.hashing import analyze_files
from marinelife.errors import MarineLifeError


@dataclass
class CheckReport:
    """What ``ml.check`` found: ``ok``, a summary and every problem; ``str()`` is the CLI text."""

    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.report["ok"])

    @property
    def problems(self) -> list[dict[str, Any]]:
        return list(self.report.get("problems", []))

    def to_dict(self) -> dict[str, Any]:
        return self.report

    def to_json(self) -> str:
        return json.dumps(self.report, indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        return format_report(self.report)


def check(data: str | Path, *, min_size: int = 32) -> CheckReport:
    """Decode every image under ``data``: bad files, tiny images, imbalance, duplicates, leakage."""
    if min_size < 1:
        raise MarineLifeError(f"--min-size must be at least 1 (got {min_size})")
    inventory = discover(Path(data))
    records = analyze_files([e.path for e in inventory.images], desc="check: decoding")
    return CheckReport(build_report(inventory, records, min_size=min_size))


def split(
    src: str | Path,
    dst: str | Path,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 42,
    mode: str = "copy",
    groups: str | Path | None = None,
) -> Path:
    """``SRC/CLASS/*.jpg`` → ``DST/{train,val,test}/CLASS/``, duplicates kept inside one split.

    ``mode="link"`` makes hard links instead of copies. Your files are never changed or moved.
    ``groups`` keeps every site/dive/day inside one split: ``"sites.csv"`` (columns file,group,
    relative to SRC), ``"regex:PATTERN"``, ``"level:N"`` (folder N below the class folder) or
    ``"exif-date"``; DST then gets ``groups.csv`` for ``cv``/``evaluate``. Every split's class mix
    against the whole is in ``DST/split_report.json``.
    """
    from marinelife.data.split import run_split

    return run_split(Path(src), Path(dst), val=val, test=test, seed=seed, mode=mode,
                     groups=groups)  # fmt: skip


def inspect(
    data: str | Path,
    *,
    out: str | Path | None = None,
    augmented: bool = False,
    recipe: str = "two-stage-lite",
) -> Path:
    """Class distribution, samples and image sizes as PNGs; returns the folder they are in."""
    from marinelife.data.inspect import run_inspect

    return run_inspect(
        Path(data), out=Path(out) if out else None, augmented=augmented, recipe=recipe
    )


def download(dest: str | Path = "data/sea-animals", *, seed: int = 42) -> Path:
    """The Kaggle Sea Animals dataset (needs Kaggle credentials), split into ``dest``."""
    from marinelife.data.download import run_download

    return run_download(Path(dest), seed=seed)
