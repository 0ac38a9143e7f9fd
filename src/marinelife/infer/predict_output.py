"""`marinelife predict` results as rows: one per photo, per sampled video frame, per failed input.

A result is a *record*, the JSON object of one row::

    {"path", "label", "confidence", "top_k": [{"label", "probability"}], "rejected", "scores",
     "unknown", "frame", "time_s", "metadata": {EXIF fields}, "sha256" (dwc only), "error"}

(``rejected`` and ``scores`` are what ``predict --format json`` always had; ``rejected`` equals
``unknown``.)

``frame``/``time_s`` are null for a photo; a failed input has an empty label, a null
confidence and the reason in ``error``, so that every input can be joined back to the list it
came from. The CSV has the same fields flat (:func:`csv_header`). Both writers stream: a row is
on disk (or stdout) as soon as it is known, never the whole run in memory. :func:`read_records`
reads either file back, for ``--resume``, merging torchrun parts and building the Darwin Core
archive, and cuts off a last row that an interrupted run left half-written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from marinelife.data.exif import METADATA_FIELDS
from marinelife.errors import MarineLifeError
from marinelife.infer.predictor import Prediction

_TAIL = ("unknown", "frame", "time_s", *METADATA_FIELDS)


def csv_header(top_k: int, *, sha256: bool = False) -> list[str]:
    """``path,label,confidence,top1_label,top1_prob,...`` then the fields added since (kept
    after the top-k columns so that scripts reading columns by position still work)."""
    pairs = [f"top{i}_{what}" for i in range(1, top_k + 1) for what in ("label", "prob")]
    return ["path", "label", "confidence", *pairs, *_TAIL, *(["sha256"] if sha256 else []), "error"]


def record(pred: Prediction, *, sha256: str = "") -> dict[str, Any]:
    """The JSON object of one row (the keys in the order of the module docstring)."""
    failed = bool(pred.error)
    data: dict[str, Any] = {
        "path": pred.path,
        "label": "" if failed else pred.label,
        "confidence": None if failed else round(pred.confidence, 6),
        "top_k": [{"label": c, "probability": round(p, 6)} for c, p in pred.top_k],
        "rejected": pred.rejected,  # kept for scripts written before "unknown"
        "scores": {k: round(v, 6) for k, v in pred.scores.items()},
        "unknown": None if failed else pred.unknown,
        "frame": pred.frame,
        "time_s": None if pred.time_s is None else round(pred.time_s, 3),
        "metadata": dict(pred.metadata),
    }
    if sha256:
        data["sha256"] = sha256
    data["error"] = pred.error
    return data


def failure(path: str, error: object) -> Prediction:
    """The row of an input that failed; the reason without the path its own column holds."""
    text = str(error)
    return Prediction.failed(path, text.removeprefix(f"{path}: "))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_cells(rec: dict[str, Any], columns: list[str]) -> list[str]:
    top = rec.get("top_k") or []
    meta = rec.get("metadata") or {}
    cells = []
    for column in columns:
        if column.startswith("top") and column[3:4].isdigit():
            i, what = column[3:].split("_")
            pair = top[int(i) - 1] if int(i) <= len(top) else None
            key = "label" if what == "label" else "probability"
            cells.append("" if pair is None else _fmt(pair[key]))
        elif column in METADATA_FIELDS:
            cells.append(_cell(meta.get(column)))
        elif column == "confidence":
            cells.append(_fmt(rec.get("confidence")))
        else:
            cells.append(_cell(rec.get(column)))
    return cells


def _fmt(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else _cell(value)


def _number(text: str) -> float | None:
    return float(text) if text else None


def record_from_cells(header: list[str], cells: list[str]) -> dict[str, Any]:
    """A CSV row back into a record (``scores`` are not in the CSV: ``{}``)."""
    row = dict(zip(header, cells))
    top = []
    i = 1
    while f"top{i}_label" in row:
        if row[f"top{i}_label"]:
            top.append({"label": row[f"top{i}_label"], "probability": float(row[f"top{i}_prob"])})
        i += 1
    meta: dict[str, Any] = {}
    for name in METADATA_FIELDS:
        value = row.get(name, "")
        is_number = name in ("latitude", "longitude", "altitude")
        meta[name] = (_number(value) if is_number else value) or None
    if not any(v is not None for v in meta.values()):
        meta = {}
    unknown = row.get("unknown", "")
    return {
        "path": row.get("path", ""),
        "label": row.get("label", ""),
        "confidence": _number(row.get("confidence", "")),
        "top_k": top,
        "rejected": unknown == "true",
        "scores": {},
        "unknown": None if unknown == "" else unknown == "true",
        "frame": int(row["frame"]) if row.get("frame") else None,
        "time_s": _number(row.get("time_s", "")),
        "metadata": meta,
        **({"sha256": row["sha256"]} if "sha256" in row else {}),
        "error": row.get("error", ""),
    }


def prediction_from(rec: dict[str, Any]) -> Prediction:
    """A record as a :class:`Prediction` (for video summaries and the API)."""
    return Prediction(
        label=rec.get("label") or "",
        confidence=float(rec.get("confidence") or 0.0),
        top_k=[(t["label"], float(t["probability"])) for t in rec.get("top_k") or []],
        rejected=bool(rec.get("unknown") or rec.get("rejected")),
        scores=dict(rec.get("scores") or {}),
        path=rec.get("path", ""),
        error=rec.get("error", ""),
        frame=rec.get("frame"),
        time_s=rec.get("time_s"),
        metadata=dict(rec.get("metadata") or {}),
    )


class CsvWriter:
    """Rows to a text stream as they come; the header first unless appending (``resume``)."""

    def __init__(self, stream: TextIO, columns: list[str], *, header: bool = True):
        self.stream, self.columns = stream, columns
        self._csv = csv.writer(stream, lineterminator="\n")
        if header:
            self._csv.writerow(columns)
            stream.flush()

    def write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self._csv.writerow(csv_cells(rec, self.columns))
        self.stream.flush()  # a row on disk is a row --resume will not predict again

    def close(self) -> None:
        self.stream.flush()


class JsonWriter:
    """A JSON array, one record per line, streamed: ``[``, records joined by ``,``, ``]``."""

    def __init__(self, stream: TextIO, *, continuing: bool = False, records: int = 0):
        # continuing: append to a file read with read_records(repair=True) holding ``records``.
        self.stream, self._first = stream, not (continuing and records)
        if not continuing:
            stream.write("[")

    def write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self.stream.write(
                ("\n" if self._first else ",\n") + json.dumps(rec, ensure_ascii=False)
            )
            self._first = False
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n]\n")
        self.stream.flush()


def read_records(path: Path, *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Every complete record of a CSV or JSON results file (by suffix), in order.

    With ``repair`` the file is also cut to its last complete record, ready to be appended to
    (a JSON file loses its closing ``]``): what an interrupted run left is continued, never
    rewritten.
    """
    if path.suffix == ".json":
        yield from _read_json(path, repair)
    else:
        yield from _read_csv(path, repair)


def _read_csv(path: Path, repair: bool) -> Iterator[dict[str, Any]]:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a last line without its newline was cut off mid-write
    if repair and end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    reader = csv.reader(io.StringIO(data[:end].decode("utf-8")))
    header = next(reader, None)
    if header is None:
        return
    for cells in reader:
        if cells:
            yield record_from_cells(header, cells)


def csv_columns_of(path: Path) -> list[str] | None:
    """The header of an existing CSV results file (None when empty)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle), None)


def _read_json(path: Path, repair: bool) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        first = handle.readline()
        if first.strip() not in (b"[", b"[]"):
            raise MarineLifeError(
                "is not a results file written by `marinelife predict --format json`",
                path=path,
                fix="choose another --out folder",
            )
        good_end = len(first.rstrip(b"\r\n").rstrip(b"]"))
        offset = len(first)
        for line in handle:
            body = line.rstrip(b"\r\n").rstrip(b",")
            try:
                rec = json.loads(body)
            except ValueError:
                break  # "]" or a record cut off mid-write: the complete ones end here
            if not isinstance(rec, dict):
                break
            good_end = offset + len(body)
            offset += len(line)
            yield rec
    if repair:  # once every record was read: cut what follows the last complete one
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
