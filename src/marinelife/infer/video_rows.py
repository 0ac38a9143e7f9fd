"""Videos inside `marinelife predict` and ``Model.predict``: frames → predictions → page.

:func:`predict_video_file` runs one video through a :class:`Predictor` and returns its frame
predictions (``Prediction.frame`` / ``.time_s`` set) plus the error that ended it, if any: a
truncated file keeps the frames before the cut, an unreadable one has none; either way the
caller goes on with its other inputs. :func:`write_video_outputs` writes the per-video summary
(``videos.csv``/``.json``: each class seen, first and last time, frames, max and mean
confidence) and the page with the timeline and key frames.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from marinelife.errors import ImageDecodeError
from marinelife.fileio import atomic_write_text
from marinelife.infer.predictor import Prediction, Predictor
from marinelife.infer.video import ClassSummary, FrameResult, predict_video, summarize
from marinelife.infer.video_report import KeyFrames, read_frames, write_video_page

SUMMARY_FILE = "videos"  # + .csv / .json
KEY_FRAMES_PER_CLASS = 3


def predict_video_file(
    predictor: Predictor,
    path: Path,
    *,
    top_k: int = 3,
    every: float | None = 1.0,
    fps: float | None = None,
    batch_size: int = 16,
    key_frames: KeyFrames | None = None,
) -> tuple[list[Prediction], ImageDecodeError | None]:
    """One video's frame predictions, in time order, and the error that stopped it (or None).

    Frames decode in ``predict_video``'s worker thread, never all in memory; only the
    predictions (and ``key_frames``' few thumbnails) are kept. Option mistakes (``every``,
    ``fps``) raise ``MarineLifeError`` before any decoding.
    """

    def classify(images: list[np.ndarray]) -> list[Prediction]:
        batch = np.stack([predictor.preprocess_image(image) for image in images])
        return predictor.predict_batch(batch, top_k=top_k)

    frames = predict_video(
        path, classify, every=every, fps=fps, batch_size=batch_size, on_frame=key_frames
    )
    predictions: list[Prediction] = []
    try:
        for result in frames:
            pred = result.prediction  # a Prediction: classify() above made it
            assert isinstance(pred, Prediction)
            pred.path, pred.frame, pred.time_s = str(path), result.frame, result.time_s
            predictions.append(pred)
    except ImageDecodeError as exc:  # VideoTruncatedError too: the frames before it stay
        return predictions, exc
    return predictions, None


def frame_results(predictions: Iterable[Prediction]) -> list[FrameResult]:
    """The video frames among ``predictions`` as ``FrameResult`` (what summaries and pages use)."""
    return [
        FrameResult(p.path, p.frame, p.time_s or 0.0, p)
        for p in predictions
        if p.frame is not None and not p.error
    ]


def video_summary(predictions: Iterable[Prediction]) -> list[ClassSummary]:
    """Per video and class: first and last time seen, frames, max and mean confidence."""
    return summarize(frame_results(predictions))


def fill_key_frames(
    keys: KeyFrames, results: Sequence[FrameResult], files: Iterable[str], per_class: int
) -> None:
    """Give ``keys`` the best frames of ``files`` that it did not watch stream by (videos of an
    earlier ``--resume`` run or of another torchrun rank), re-reading just those frames."""
    for file in files:
        best: dict[str, list[FrameResult]] = {}
        for r in results:
            if r.file == file and not r.unknown:
                best.setdefault(r.label, []).append(r)
        chosen = [
            r
            for items in best.values()
            for r in sorted(items, key=lambda r: (-r.confidence, r.frame))[:per_class]
        ]
        pixels = read_frames(file, (r.frame for r in chosen))
        for r in chosen:
            if r.frame in pixels:
                keys(r, pixels[r.frame])


def write_video_outputs(
    results: Sequence[FrameResult],
    out_dir: Path,
    *,
    key_frames: KeyFrames | None,
    notes: dict[str, str],
    formats: Sequence[str] = ("csv",),
) -> Path:
    """``videos.csv`` (and ``videos.json`` when asked) and the page, in ``out_dir``; returns
    the page (``<video>.html`` for one video, ``index.html`` for several)."""
    summaries = summarize(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [s.to_dict() for s in summaries]
    if "csv" in formats:
        columns = list(ClassSummary.__dataclass_fields__)
        lines = [",".join(columns)]
        for row in rows:
            lines.append(_csv_line([row[c] for c in columns]))
        atomic_write_text(out_dir / f"{SUMMARY_FILE}.csv", "\n".join(lines) + "\n")
    if "json" in formats:
        text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
        atomic_write_text(out_dir / f"{SUMMARY_FILE}.json", text)
    files = list(dict.fromkeys(r.file for r in results)) or list(notes)
    title = (
        f"marinelife predict: {Path(files[0]).name}" if len(files) == 1 else "marinelife predict"
    )
    return write_video_page(
        results,
        summaries,
        out_dir,
        title=title,
        key_frames=key_frames,
        per_class=KEY_FRAMES_PER_CLASS,
        notes=notes,
    )


def _csv_line(cells: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()
