"""Predict results → a Darwin Core Archive (``occurrence.txt`` + ``meta.xml`` + ``dwca.zip``).

The glue between the rows `predict` writes (:mod:`~marinelife.infer.predict_output` records)
and :mod:`~marinelife.infer.darwin_core`: a photo is one occurrence; a video is one occurrence
per class seen in it (at its first sighting, the remarks saying how long and how sure), not one
per sampled frame, which would record the same fish hundreds of times. Failed inputs have no
occurrence. Everything streams: a survey's archive never sits in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from marinelife.errors import MarineLifeError
from marinelife.fileio import file_sha256
from marinelife.infer.darwin_core import (
    check_taxonomy,
    iter_occurrence_rows,
    write_dwc_archive,
    zip_archive,
)
from marinelife.infer.predict_output import prediction_from
from marinelife.infer.predictor import Predictor
from marinelife.infer.taxa import Taxon, load_taxonomy
from marinelife.infer.video import FrameResult, clock, summarize

ZIP_NAME = "dwca.zip"


def model_identity(predictor: Predictor) -> tuple[str, str]:
    """``(model_name, model_version)`` for ``identifiedBy``: the recipe and architecture, then
    the weights' digest (what changes when the model does) and the marinelife version."""
    info = predictor.info
    recipe = "" if info.recipe in ("", "custom") else f" {info.recipe}"
    name = f"marinelife{recipe} {info.architecture}"
    return name, f"model {predictor.model_id} (marinelife {info.marinelife_version})"


def prepare_taxonomy(path: Path | None, classes: Iterable[str]) -> dict[str, Taxon]:
    """The taxonomy (``None``: the shipped 23-class map), refused now when it lacks a class."""
    taxonomy = load_taxonomy(path)
    check_taxonomy(classes, taxonomy)
    return taxonomy


def dwc_records(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Prediction records (in input order) → ``darwin_core`` records, one input at a time."""
    for path, group in itertools.groupby(records, key=lambda rec: rec.get("path", "")):
        rows = [r for r in group if not r.get("error")]
        if not rows:
            continue  # a failed input: nothing was observed
        if not path:
            raise MarineLifeError(
                "a prediction of an in-memory image has no file to cite",
                fix="predict on photo files to export Darwin Core records",
            )
        sha256 = rows[0].get("sha256") or file_sha256(path)
        if rows[0].get("frame") is None:
            for rec in rows:
                yield _photo(rec, sha256)
        else:
            yield from _video(rows, sha256)


def _photo(rec: dict[str, Any], sha256: str) -> dict[str, Any]:
    return {
        "file": rec["path"],
        "sha256": sha256,
        "label": rec["label"],
        "confidence": rec["confidence"],
        "top_k": [(t["label"], t["probability"]) for t in rec.get("top_k") or []],
        "unknown": bool(rec.get("unknown")),
        "metadata": rec.get("metadata") or {},
    }


def _video(rows: list[dict[str, Any]], sha256: str) -> Iterator[dict[str, Any]]:
    results = []
    for rec in rows:
        pred = prediction_from(rec)
        results.append(FrameResult(pred.path, pred.frame or 0, pred.time_s or 0.0, pred))
    for s in summarize(results):
        yield {
            "file": s.file,
            "sha256": sha256,
            "label": s.label,
            "confidence": s.max_confidence,
            "top_k": [(s.label, s.max_confidence)],
            "unknown": s.unknown,
            "time_s": s.first_s,  # the first sighting: a stable position for occurrenceID
            "remarks": (
                f"video: {s.frames} sampled frame(s) from {clock(s.first_s)} to "
                f"{clock(s.last_s)}; confidence max {s.max_confidence:.3f}, "
                f"mean {s.mean_confidence:.3f}"
            ),
        }


def write_dwc(
    records: Iterable[dict[str, Any]],
    out_dir: Path,
    *,
    predictor: Predictor,
    taxonomy: dict[str, Taxon],
    include_unknown: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``occurrence.txt`` + ``meta.xml`` into ``out_dir`` and pack them as ``dwca.zip``
    there (the file a portal uploads); returns the zip."""
    name, version = model_identity(predictor)
    rows = iter_occurrence_rows(
        dwc_records(records),
        taxonomy,
        model_name=name,
        model_version=version,
        include_unknown=include_unknown,
    )
    write_dwc_archive(rows, out_dir, overwrite=overwrite)
    return zip_archive(out_dir, out_dir / ZIP_NAME, overwrite=overwrite)
