"""`marinelife predict`: photos and videos (files, folders, globs) → a table, CSV, JSON or a
Darwin Core archive, with a page per run of videos.

One row per input, in input order: a photo, every sampled frame of a video, and every input
that failed (its reason in the ``error`` column; also one line on stderr), so results join back
to the input list. Rows stream out as they are computed (stdout, or ``--out DIR``), photos
decoding in worker threads a couple of batches ahead of the network and videos in a decoder
thread, so a survey of 100k+ photos runs in flat memory. The command exits 1 at the end if any
input failed, 2 on a usage error (nothing to predict at all, a bad option, a refused folder).
The progress bar is drawn only on a terminal.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.fileio import file_sha256
from marinelife.infer import sharding
from marinelife.infer.decode_pool import make_executor
from marinelife.infer.dwc_export import prepare_taxonomy, write_dwc
from marinelife.infer.predict_inputs import (
    IMAGE,
    PROBLEM,
    Input,
    expand_inputs,
    first_real,
    iter_inputs,
)
from marinelife.infer.predict_output import (
    CsvWriter,
    JsonWriter,
    csv_header,
    failure,
    prediction_from,
    record,
)
from marinelife.infer.predictor import Predictor
from marinelife.infer.results_dir import ResultsDir
from marinelife.infer.taxa import Taxon
from marinelife.infer.video import FrameResult, clock, sampling_step
from marinelife.infer.video_io import is_video_path
from marinelife.infer.video_report import KeyFrames
from marinelife.infer.video_rows import (
    KEY_FRAMES_PER_CLASS,
    fill_key_frames,
    frame_results,
    predict_video_file,
    write_video_outputs,
)
from marinelife.logutil import display_width, pad, progress_enabled

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json", "dwc")
__all__ = ["FORMATS", "csv_header", "expand_inputs", "run_predict", "write_predictions"]


@dataclass
class PredictOptions:
    """Everything `predict` was asked, checked once before any file is read."""

    top_k: int = 3
    fmt: str = "table"
    batch_size: int = 16
    out_dir: Path | None = None
    every: float | None = 1.0
    fps: float | None = None
    taxonomy: Path | None = None
    include_unknown: bool = False
    resume: bool = False
    overwrite: bool = False
    workers: int = 0
    pool: str = "thread"

    def check(self, shard: sharding.Shard) -> None:
        if self.fmt not in FORMATS:
            raise MarineLifeError(f"--format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        if self.top_k < 1 or self.batch_size < 1:
            raise MarineLifeError("--top-k and --batch-size must be at least 1")
        sampling_step(self.every, self.fps)  # names a bad --every/--fps now, not per video
        need_dir = [
            (self.fmt == "dwc", "--format dwc"),
            (self.resume, "--resume"),
            (shard.distributed, "torchrun"),
        ]
        for needed, what in need_dir:
            if needed and self.out_dir is None:
                raise MarineLifeError(
                    f"{what} needs --out DIR (the results are files there)",
                    fix="add e.g. --out records/",
                )
        if self.fmt != "dwc" and (self.taxonomy is not None or self.include_unknown):
            raise MarineLifeError(
                "--taxonomy and --include-unknown apply to --format dwc only",
                fix="add --format dwc --out DIR, or drop them",
            )
        if self.resume and self.overwrite:
            raise MarineLifeError("--resume and --overwrite exclude each other: give one")


@dataclass
class _Tally:
    """What this process saw: counts for the summary line, and its videos' frames and key
    frames for the page (photos are never kept: their rows are already written)."""

    inputs: int = 0
    failed: int = 0
    videos: list[FrameResult] = field(default_factory=list)
    video_files: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    keys: KeyFrames = field(default_factory=lambda: KeyFrames(KEY_FRAMES_PER_CLASS))


def run_predict(model: Path, inputs: Sequence[str | Path], **kwargs: Any) -> int:
    """Load ``model`` (``backend``, ``reject``, ``tta``, ``threads`` keywords) and
    :func:`write_predictions`; returns 0, or 1 when any input failed."""
    load = {k: kwargs.pop(k) for k in ("backend", "reject", "tta", "threads") if k in kwargs}
    return write_predictions(Predictor.load(model, **load), inputs, **kwargs)


def write_predictions(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    **options: Any,
) -> int:
    """Predict every input (options: the fields of :class:`PredictOptions`); returns 0, or 1
    when any input could not be read. ``out``/``err``: stdout/stderr unless given."""
    out, err = out or sys.stdout, err or sys.stderr
    opts = PredictOptions(**options)
    shard = sharding.join()
    try:
        opts.check(shard)
        return _predict(predictor, inputs, opts, shard, out, err)
    finally:
        shard.leave()


def _predict(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    opts: PredictOptions,
    shard: sharding.Shard,
    out: TextIO,
    err: TextIO,
) -> int:
    opts.top_k = min(opts.top_k, len(predictor.classes))
    columns = csv_header(opts.top_k, sha256=opts.fmt == "dwc")
    folder = None
    if opts.out_dir is not None:
        folder = ResultsDir(Path(opts.out_dir), "json" if opts.fmt == "json" else "csv", columns)
        folder.check(resume=opts.resume, overwrite=opts.overwrite)
    taxonomy = prepare_taxonomy(opts.taxonomy, predictor.classes) if opts.fmt == "dwc" else None
    stream = first_real(iter_inputs(inputs))  # raises (exit 2) when nothing names a file
    shard.barrier()  # every rank has checked the folder before rank 0 writes to it
    if folder is not None:
        folder.start(shard, resume=opts.resume)
        if folder.done:
            log.info("--resume: %d input(s) already in %s", len(folder.done), folder.results)
    if shard.main:
        for note in predictor.notes:
            log.warning("%s", note)
    done = folder.done if folder is not None else set()
    todo = shard.take(entry for entry in stream if entry.name not in done)
    tally = _Tally()
    handle, writers = None, []
    if folder is not None:
        handle, writer = folder.open_writer(shard)
        writers.append(writer)
    if opts.fmt == "table" and not shard.distributed:
        writers.append(_Table(out))
    elif folder is None:
        writers.append(CsvWriter(out, columns) if opts.fmt == "csv" else JsonWriter(out))
    try:
        for records in _records(predictor, todo, opts, tally, inputs, done, shard, err):
            for writer in writers:
                writer.write(records)
        for writer in writers:
            writer.close()
    finally:
        if handle is not None:
            handle.close()
    shard.barrier()  # every rank has written its part
    failed, total = shard.sum(tally.failed), shard.sum(tally.inputs)
    if folder is not None:
        folder.merge_parts(shard)
    if shard.main:
        _finish(predictor, opts, folder, taxonomy, tally, shard, err)
    if failed and shard.main:
        print(f"{failed} of {total} inputs failed", file=err)
    return 1 if failed else 0


def _records(
    predictor: Predictor,
    todo: Iterator[Input],
    opts: PredictOptions,
    tally: _Tally,
    inputs: Sequence[str | Path],
    done: set[str],
    shard: sharding.Shard,
    err: TextIO,
) -> Iterator[list[dict[str, Any]]]:
    """Lists of records, in input order: one per photo batch, one per video, one per problem."""
    show = progress_enabled() and shard.main and getattr(sys.stderr, "isatty", lambda: False)()
    # The total costs a second walk of the folders, so it is counted only for a visible bar.
    total = _count(inputs, done, shard) if show else None
    bar = tqdm(total=total, desc="predict", unit="file", leave=False, file=sys.stderr,
               disable=not show, dynamic_ncols=True)  # fmt: skip

    def say(line: str) -> None:
        tally.failed += 1
        (tqdm.write if show else print)(line, file=err)  # type: ignore[operator]

    sha = opts.fmt == "dwc"
    with bar, make_executor(opts.pool, opts.workers) as executor:
        for kind, group in itertools.groupby(todo, key=lambda entry: entry.kind):
            if kind == PROBLEM:
                for entry in group:
                    tally.inputs += 1
                    say(f"{entry.name}: {entry.problem}")
                    bar.update(1)
                    yield [record(failure(entry.name, entry.problem))]
            elif kind == IMAGE:
                batch: list[dict[str, Any]] = []
                files = predictor.predict_files(
                    (entry.path for entry in group), top_k=opts.top_k, batch_size=opts.batch_size,
                    metadata=True, executor=executor,
                )  # fmt: skip
                for path, result in files:
                    tally.inputs += 1
                    bar.update(1)
                    if isinstance(result, ImageDecodeError):
                        say(str(result))
                        batch.append(record(failure(str(path), result)))
                    else:
                        result.path = str(path)
                        batch.append(record(result, sha256=file_sha256(path) if sha else ""))
                    if len(batch) >= opts.batch_size:
                        yield batch
                        batch = []
                if batch:
                    yield batch
            else:
                for entry in group:
                    tally.inputs += 1
                    yield _video(predictor, entry, opts, tally, say, sha)
                    bar.update(1)


def _video(
    predictor: Predictor,
    entry: Input,
    opts: PredictOptions,
    tally: _Tally,
    say: Callable[[str], None],
    sha: bool,
) -> list[dict[str, Any]]:
    """One video's rows: a row per sampled frame, then an error row if decoding stopped."""
    preds, error = predict_video_file(
        predictor, entry.path, top_k=opts.top_k, every=opts.every, fps=opts.fps,
        batch_size=opts.batch_size, key_frames=tally.keys,
    )  # fmt: skip
    digest = file_sha256(entry.path) if sha and preds else ""
    rows = [record(p, sha256=digest) for p in preds]
    tally.videos.extend(frame_results(preds))
    tally.video_files.append(entry.name)
    if error is not None:
        say(str(error))
        tally.notes[entry.name] = str(error)
        rows.append(record(failure(entry.name, error)))
    return rows


def _count(inputs: Sequence[str | Path], done: set[str], shard: sharding.Shard) -> int:
    names = (e for e in iter_inputs(inputs, warn=False) if e.name not in done)
    return sum(1 for _ in shard.take(names))


def _finish(
    predictor: Predictor,
    opts: PredictOptions,
    folder: ResultsDir | None,
    taxonomy: dict[str, Taxon] | None,
    tally: _Tally,
    shard: sharding.Shard,
    err: TextIO,
) -> None:
    """Rank 0, once all rows are written: the video page(s) and the Darwin Core archive."""
    results, keys, notes = tally.videos, tally.keys, dict(tally.notes)
    if folder is not None and (opts.resume or shard.distributed):
        # Videos of an earlier run or another rank are in the results file, not in memory.
        results, notes = _videos_from(folder.read())
        mine = set(tally.video_files)  # their key frames streamed by; the others are re-read
        others = [f for f in dict.fromkeys(r.file for r in results) if f not in mine]
        fill_key_frames(keys, results, others, KEY_FRAMES_PER_CLASS)
    if results:
        page_dir = folder.folder if folder is not None else _fresh_dir(results[0].file)
        formats = ("csv", "json") if opts.fmt == "json" else ("csv",)
        page = write_video_outputs(results, page_dir, key_frames=keys, notes=notes,
                                   formats=formats)  # fmt: skip
        print(f"video page: {page}", file=err)
    if opts.fmt == "dwc" and folder is not None and taxonomy is not None:
        replace = opts.resume or opts.overwrite
        zipped = write_dwc(folder.read(), folder.folder, predictor=predictor, taxonomy=taxonomy,
                           include_unknown=opts.include_unknown, overwrite=replace)  # fmt: skip
        print(f"Darwin Core archive: {folder.folder} (upload {zipped})", file=err)


def _videos_from(records: Iterator[dict[str, Any]]) -> tuple[list[FrameResult], dict[str, str]]:
    results: list[FrameResult] = []
    notes: dict[str, str] = {}
    for rec in records:
        if rec.get("frame") is not None:
            pred = prediction_from(rec)
            results.append(FrameResult(pred.path, pred.frame, pred.time_s or 0.0, pred))
        elif rec.get("error") and is_video_path(rec.get("path", "")):
            notes[rec["path"]] = rec["error"]
    return results, notes


def _fresh_dir(video: str) -> Path:
    """``./<video>-predict`` (``-2``, ``-3``… when taken): never an earlier run's page."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(video).stem).strip("._") or "video"
    for n in itertools.count(1):
        candidate = Path(f"{stem}-predict" + ("" if n == 1 else f"-{n}"))
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


class _Table:
    """The terminal table, printed at the end (it aligns columns over all rows; for large
    runs use csv/json, which stream)."""

    def __init__(self, out: TextIO):
        self.out = out
        self.rows: list[tuple[str, str, str, str]] = [("path", "label", "confidence", "top-k")]

    def write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            path = rec["path"]
            if rec.get("time_s") is not None:
                path = f"{path} @{clock(rec['time_s'])}"
            if rec.get("error"):
                self.rows.append((path, "(error)", "", rec["error"]))
                continue
            top = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in rec["top_k"])
            self.rows.append((path, rec["label"], f"{rec['confidence']:.3f}", top))

    def close(self) -> None:
        if len(self.rows) == 1:
            return
        widths = [max(display_width(r[i]) for r in self.rows) for i in range(3)]
        for r in self.rows:
            cells = [pad(r[0], widths[0]), pad(r[1], widths[1]), pad(r[2], widths[2], right=True)]
            line = "  ".join([*cells, r[3]])
            print(line.rstrip(), file=self.out)
        self.out.flush()
