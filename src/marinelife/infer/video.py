"""Classify dive footage: sample frames from a video file and run an image classifier on them.

The pieces (``video_rows`` wires them into ``marinelife predict`` and ``Model.predict``;
opening, probing and the decoding loop are in ``video_io``):

* :func:`sample_frames` decodes a video with OpenCV's bundled FFmpeg in a background thread and
  yields one :class:`VideoFrame` every ``every`` seconds (or ``fps`` per second);
* :func:`predict_video` batches those frames through any ``classify(list_of_rgb) -> predictions``
  callable (e.g. ``Predictor``-based) and yields one :class:`FrameResult` per sampled frame;
* :func:`summarize` turns a video's results into per-class :class:`ClassSummary` rows (first and
  last sighting, frames, confidence), for the CSV/JSON output and ``video_report``.

Truncated or corrupt files: frames decoded before the damage are real footage, so they are
yielded (and classified) first; then :class:`VideoTruncatedError` (an ``ImageDecodeError``) is
raised, carrying ``until_s`` so that the caller can report "truncated after N s", keep the
partial results and go on with its other inputs. A file that cannot be opened, or that yields no
frame at all, raises ``ImageDecodeError`` before anything is yielded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from marinelife.errors import MarineLifeError
from marinelife.infer.rejection import UNKNOWN
from marinelife.infer.video_io import (
    VIDEO_EXTENSIONS,
    VideoFrame,
    VideoInfo,
    VideoTruncatedError,
    clock,
    decode_sampled,
    is_video_path,
    open_video,
    probe_video,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "ClassSummary",
    "FrameResult",
    "PredictionLike",
    "VideoFrame",
    "VideoInfo",
    "VideoTruncatedError",
    "clock",
    "is_video_path",
    "open_video",
    "predict_video",
    "probe_video",
    "sample_frames",
    "sampling_step",
    "summarize",
]

THREAD_PREFIX = "marinelife-video"
# Decoded frames waiting for the consumer: enough to hide a slow batch, never a whole video
# (8 frames of 4K RGB are 200 MB; of 1080p, 50 MB).
QUEUE_FRAMES = 8


class PredictionLike(Protocol):
    """What ``classify`` returns per image; ``marinelife.infer.predictor.Prediction`` fits."""

    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    rejected: bool


Classify = Callable[[list[np.ndarray]], Sequence[PredictionLike]]


@dataclass(frozen=True)
class FrameResult:
    """The prediction for one sampled frame of ``file``."""

    file: str
    frame: int
    time_s: float
    prediction: PredictionLike

    @property
    def label(self) -> str:
        return self.prediction.label

    @property
    def confidence(self) -> float:
        return float(self.prediction.confidence)

    @property
    def unknown(self) -> bool:
        return bool(self.prediction.rejected)

    def to_dict(self) -> dict[str, Any]:
        """One CSV/JSON row. ``top_k`` is ``"A:0.9;B:0.05"`` (``.prediction.top_k`` has pairs)."""
        top = ";".join(f"{name}:{round(float(p), 4):g}" for name, p in self.prediction.top_k)
        return {
            "file": self.file,
            "frame": self.frame,
            "time_s": round(self.time_s, 3),
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": top,
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class ClassSummary:
    """One class in one video. Unknown (rejected) frames get their own row, ``label="unknown"``."""

    file: str
    label: str
    first_s: float
    last_s: float
    frames: int
    max_confidence: float
    mean_confidence: float

    @property
    def unknown(self) -> bool:
        return self.label == UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}


def sampling_step(every: float | None, fps: float | None) -> float:
    if fps is not None and every == 1.0:
        every = None  # fps with the default every: fps wins (the CLI refuses both flags given)
    if every is not None and fps is not None:
        raise MarineLifeError(
            "--every and --fps are mutually exclusive", fix="give one of them (default: --every 1)"
        )
    for name, value, unit in (("every", every, "seconds"), ("fps", fps, "frames per second")):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value) and value > 0):
            raise MarineLifeError(
                f"--{name} must be a positive, finite number of {unit}, got {value!r}",
                fix=f"e.g. --{name} {'0.5' if name == 'every' else '2'}",
            )
    return 1.0 / float(fps) if fps is not None else float(every if every is not None else 1.0)


_END = object()


def sample_frames(
    path: str | Path, *, every: float | None = 1.0, fps: float | None = None
) -> Iterator[VideoFrame]:
    """Yield a frame every ``every`` seconds (default 1), or ``fps`` frames per second.

    ``fps`` replaces the default ``every=1.0``; any other ``every`` with ``fps``, or a value that
    is not positive and finite, is a ``MarineLifeError`` naming the option, raised at call time.
    The frames are those nearest to ``0, step, 2*step, ...`` (never one twice). The file is
    opened when iteration starts. Decoding runs in a background thread at most ``QUEUE_FRAMES``
    frames ahead, so a long video never sits in memory and the caller's work overlaps decoding.
    Closing the iterator early (``break``, ``.close()``) or an exception stops the thread and
    releases the file. Raises ``ImageDecodeError`` as described in the module docstring.
    """
    return _frames(Path(path), sampling_step(every, fps))


def _frames(path: Path, step: float) -> Iterator[VideoFrame]:
    frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
    stop = threading.Event()

    def emit(item: Any) -> bool:
        # A bounded put that gives up once the consumer has gone away.
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            decode_sampled(path, step, emit)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            emit(exc)
        emit(_END)

    worker = threading.Thread(target=work, name=f"{THREAD_PREFIX}:{path.name}", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = frames.get(timeout=1.0)
            except queue.Empty:
                if not worker.is_alive() and frames.empty():
                    raise RuntimeError(f"video decoder thread for {path} died") from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not frames.empty():  # unblock a put in progress
            frames.get_nowait()
        worker.join(timeout=30)


def predict_video(
    path: str | Path,
    classify: Classify,
    *,
    every: float | None = 1.0,
    fps: float | None = None,
    batch_size: int = 16,
    on_frame: Callable[[FrameResult, np.ndarray], None] | None = None,
) -> Iterator[FrameResult]:
    """Classify sampled frames in batches of ``batch_size``; yield one result per frame, in order.

    ``classify`` gets a list of HxWx3 uint8 RGB arrays and returns one prediction per array.
    ``on_frame(result, rgb)``, when given, sees each frame's pixels before they are dropped
    (e.g. ``video_report.KeyFrames`` keeps the best few per class for the page). On a truncated
    file the frames before the damage are classified and yielded, then ``VideoTruncatedError``
    is raised.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise MarineLifeError(f"--batch-size must be a positive integer, got {batch_size!r}")
    frames = sample_frames(path, every=every, fps=fps)  # checks the options now, not lazily
    return _predict(str(path), frames, classify, batch_size, on_frame)


def _predict(
    name: str,
    frames: Iterator[VideoFrame],
    classify: Classify,
    batch_size: int,
    on_frame: Callable[[FrameResult, np.ndarray], None] | None,
) -> Iterator[FrameResult]:
    def run(batch: list[VideoFrame]) -> Iterator[FrameResult]:
        if not batch:
            return
        predictions = list(classify([f.rgb for f in batch]))
        if len(predictions) != len(batch):
            raise RuntimeError(
                f"classify returned {len(predictions)} predictions for {len(batch)} frames"
            )
        for frame, prediction in zip(batch, predictions):
            result = FrameResult(name, frame.index, frame.time_s, prediction)
            if on_frame is not None:
                on_frame(result, frame.rgb)
            yield result

    batch: list[VideoFrame] = []
    try:
        for frame in frames:
            batch.append(frame)
            if len(batch) >= batch_size:
                yield from run(batch)
                batch = []
    except VideoTruncatedError:
        yield from run(batch)  # footage before the damage is real: report it, then the error
        raise
    finally:
        frames.close()
    yield from run(batch)


def summarize(results: Iterable[FrameResult]) -> list[ClassSummary]:
    """Per file (in order of appearance), one row per class by first sighting; unknown last."""
    groups: dict[tuple[str, str], list[FrameResult]] = {}
    for result in results:
        label = UNKNOWN if result.unknown else result.label
        groups.setdefault((result.file, label), []).append(result)
    files = list(dict.fromkeys(file for file, _ in groups))
    rows = []
    for (file, label), items in groups.items():
        confidences = [r.confidence for r in items]
        times = [r.time_s for r in items]
        rows.append(
            ClassSummary(
                file=file,
                label=label,
                first_s=min(times),
                last_s=max(times),
                frames=len(items),
                max_confidence=max(confidences),
                mean_confidence=float(np.mean(confidences)),
            )
        )
    rows.sort(key=lambda s: (files.index(s.file), s.label == UNKNOWN, s.first_s, s.label))
    return rows
