"""Open, probe and decode video files: the OpenCV/FFmpeg layer under :mod:`marinelife.infer.video`.

:func:`open_video` / :func:`probe_video` read the container header (:class:`VideoInfo`);
:func:`decode_sampled` is the decoding loop that ``sample_frames`` runs in its worker thread:
it grabs every frame, converts only the sampled ones, and tells a truncated file from a whole one
by comparing the frames it decoded with the header's count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from marinelife.errors import ImageDecodeError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".m4v"})
# The header's frame count is sometimes an estimate (duration x fps) off by a frame or two, so
# only a larger shortfall counts as truncation.
_SHORTFALL_FRAMES = 3
_SHORTFALL_FRACTION = 0.002
_FIX_DAMAGED = "copy the file again from the camera or card (the copy may be incomplete)"


class VideoTruncatedError(ImageDecodeError):
    """Decoding stopped early; every frame sampled before ``until_s`` was yielded and is valid."""

    def __init__(self, path: Path, frames_read: int, expected: int, until_s: float):
        self.frames_read, self.expected, self.until_s = frames_read, expected, until_s
        super().__init__(
            f"video is truncated or corrupt: decoding stopped after {clock(until_s)} "
            f"(frame {frames_read} of {expected}); results before that point are valid",
            path=path,
            fix=_FIX_DAMAGED,
        )

    def __reduce__(self):  # picklable, for callers that fan videos out to processes
        return type(self), (self.path, self.frames_read, self.expected, self.until_s)


@dataclass(frozen=True)
class VideoInfo:
    """The container header; ``frame_count`` is -1 when unknown (and may be an estimate)."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration_s(self) -> float | None:
        return self.frame_count / self.fps if self.frame_count > 0 and self.fps > 0 else None


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: ``index`` counts decoded frames from 0; ``rgb`` is HxWx3 uint8 RGB."""

    index: int
    time_s: float
    rgb: np.ndarray


def is_video_path(path: str | Path) -> bool:
    """A video by extension; hidden files (macOS ``._clip.mp4`` on SD cards) are not."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def clock(seconds: float) -> str:
    """``75.25`` → ``"1:15.2"`` (``h:mm:ss.s`` past an hour)."""
    tenths = int(round(max(seconds, 0.0) * 10))
    minutes, tenth_s = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    sec = f"{tenth_s // 10:02d}.{tenth_s % 10}"
    return f"{hours}:{minutes:02d}:{sec}" if hours else f"{minutes}:{sec}"


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An opened FFmpeg capture (BGR frames; release it) and its header, or ImageDecodeError."""
    if not path.is_file():
        raise ImageDecodeError("no such file", path=path, fix="check the path")
    if path.stat().st_size == 0:
        raise ImageDecodeError("zero-byte file", path=path, fix=_FIX_DAMAGED)
    # FFmpeg explicitly: the image-sequence backend would read "clip%03d.mp4" as a pattern. An
    # absolute path, so that a name like "concat:x" is never taken for an FFmpeg protocol.
    capture = cv2.VideoCapture(str(path.resolve()), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise ImageDecodeError(
            "cannot open as a video (not a video, an unknown codec, or cut off before its index)",
            path=path,
            fix="if it plays elsewhere, re-encode it to H.264 MP4; if not, copy it again from "
            "the camera or card",
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(
        path=path,
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        # Some containers report 0, NaN or a 1000 fps time base instead of the frame rate.
        fps=float(fps) if math.isfinite(fps) and 0 < fps <= 480 else 0.0,
        frame_count=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), -1),
    )
    return capture, info


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate and frame count from the header (no decoding); ImageDecodeError if none."""
    capture, info = open_video(Path(path))
    capture.release()
    return info


class _Clock:
    """Frame timestamps: the stream's own when the backend reports them (right for variable frame
    rate phone footage), else ``index / fps``. Decided on frame 1 (frame 0 is at 0 either way)."""

    def __init__(self, capture: cv2.VideoCapture, info: VideoInfo):
        self.capture, self.info, self.use_stream, self.last = capture, info, None, 0.0

    def __call__(self, index: int) -> float:
        stream = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self.use_stream is None and index >= 1:
            self.use_stream = math.isfinite(stream) and stream > 0
            if not self.use_stream and not self.info.fps:
                raise ImageDecodeError(
                    "has neither frame timestamps nor a frame rate",
                    path=self.info.path,
                    fix="re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
                )
        if self.use_stream:
            t = stream if math.isfinite(stream) else self.last
        else:
            t = index / self.info.fps if self.info.fps else 0.0
        # Never backwards, whatever the container says; microseconds hide ms→s float noise.
        self.last = max(round(t, 6), self.last)
        return self.last


def decode_sampled(path: Path, step: float, emit: Callable[[Any], bool]) -> None:
    """The worker: grab every frame, retrieve (convert) only the sampled ones, ``emit`` them."""
    capture, info = open_video(path)
    try:
        now = _Clock(capture, info)
        # Half a frame: pick the frame nearest each target time, immune to float rounding.
        slack = 0.5 / info.fps if info.fps else 1e-6
        target, index, last_t, sampled = 0.0, 0, 0.0, 0
        while True:
            # grab() demuxes and decodes but skips the BGR conversion and copy that retrieve()
            # does; seeking (CAP_PROP_POS_FRAMES) is avoided: it is not frame-exact for all files.
            if not capture.grab():
                break
            t = now(index)
            if t + slack >= target:
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    break  # a frame that demuxed but does not decode: damage, as below
                if not emit(VideoFrame(index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))):
                    return
                sampled += 1
                target = (math.floor((t + slack) / step + 1e-9) + 1) * step
            last_t = t
            index += 1
        if index == 0 or sampled == 0:
            raise ImageDecodeError(
                f"video is corrupt or truncated: no frame decodes (the header promises "
                f"{info.frame_count})",
                path=path,
                fix=_FIX_DAMAGED,
            )
        allowed = max(_SHORTFALL_FRAMES, math.ceil(_SHORTFALL_FRACTION * info.frame_count))
        if info.frame_count > 0 and index < info.frame_count - allowed:
            raise VideoTruncatedError(
                path, frames_read=index, expected=info.frame_count, until_s=last_t
            )
    finally:
        capture.release()
