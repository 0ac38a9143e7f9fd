"""Video throughput: how fast `predict_video` samples and classifies dive footage.

Generates a synthetic clip (moving shapes over a gradient, MPEG-4 Part 2 via cv2.VideoWriter, the
codec every OpenCV build writes) into a temporary folder, then times:

* naive: ``VideoCapture.read()`` of every frame (the cost of decoding + converting everything);
* sampled: ``sample_frames(every=...)`` with a fake classifier: ``grab()`` for skipped frames,
  decoding in the background thread (decode throughput of the real code path);
* model (with ``--model RUN_OR_ONNX``): the same, classifying each sampled frame with
  ``Predictor.load(...)`` after ``marinelife.data.preprocess.preprocess_image``.

Reports source frames/s (frames of the file processed per second), sampled frames/s and the
realtime factor (seconds of video per second of wall time).

    .venv/bin/python bench/video_speed.py [--minutes 10] [--height 720] [--fps 30] [--every 1]
        [--model runs/lite0] [--batch-size 16] [--video EXISTING.mp4]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from marinelife.infer.video import predict_video, probe_video


def make_clip(path: Path, *, minutes: float, height: int, fps: float) -> Path:
    width = int(round(height * 16 / 9 / 2)) * 2
    frames = max(1, int(round(minutes * 60 * fps)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path}")
    # A vertical blue-green gradient, like open water, drawn once.
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    water = (np.array([120, 80, 10]) * (1 - ramp) + np.array([60, 30, 0]) * ramp).astype(np.uint8)
    water = np.ascontiguousarray(np.broadcast_to(water, (height, width, 3)))
    rng = np.random.default_rng(0)
    shapes = [
        (rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-4, 4), rng.uniform(-2, 2))
        for _ in range(6)
    ]
    colours = [tuple(int(c) for c in rng.integers(40, 255, 3)) for _ in shapes]
    radius = max(4, height // 12)
    for i in range(frames):
        frame = water.copy()
        for k, ((x, y, dx, dy), colour) in enumerate(zip(shapes, colours)):
            cx = int((x + dx * i * height / 180) % width)
            cy = int((y + dy * i * height / 180) % height)
            if k % 2:
                cv2.circle(frame, (cx, cy), radius, colour, -1)
            else:
                cv2.rectangle(frame, (cx, cy), (cx + 2 * radius, cy + radius), colour, -1)
        writer.write(frame)
    writer.release()
    return path


def fake_classify(images: list[np.ndarray]) -> list[SimpleNamespace]:
    # Touch the pixels (as any model's preprocessing would), then answer instantly.
    return [
        SimpleNamespace(
            label="fish", confidence=float(im[::16, ::16].mean()) / 255, top_k=[], rejected=False
        )
        for im in images
    ]


def model_classify(model: str) -> Callable[[list[np.ndarray]], list]:
    from marinelife.data.preprocess import preprocess_image
    from marinelife.infer.predictor import Predictor

    predictor = Predictor.load(model)
    config = predictor.info.preprocess

    def classify(images: list[np.ndarray]) -> list:
        batch = np.stack([preprocess_image(im, config).numpy() for im in images])
        return predictor.predict_batch(batch)

    classify([np.zeros((720, 1280, 3), np.uint8)])  # warm-up: first-call allocations
    return classify


def time_naive(path: Path) -> tuple[int, float]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    start, count = time.perf_counter(), 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # what sampling does to each kept frame
        count += 1
    capture.release()
    return count, time.perf_counter() - start


def time_sampled(path: Path, classify, every: float, batch_size: int) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in predict_video(path, classify, every=every, batch_size=batch_size))
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the generated clip")
    parser.add_argument("--every", type=float, default=1.0, help="sample one frame per N seconds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", help="run folder, bundle or .onnx for the model row")
    parser.add_argument("--video", type=Path, help="time this file instead of a generated clip")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="marinelife-video-bench-") as tmp:
        if args.video:
            clip = args.video
        else:
            start = time.perf_counter()
            clip = make_clip(
                Path(tmp) / "clip.mp4", minutes=args.minutes, height=args.height, fps=args.fps
            )
            print(f"generated {clip.stat().st_size / 1e6:.1f} MB in "
                  f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        info = probe_video(clip)
        duration = info.duration_s or 0.0
        print(
            f"{clip.name}: {info.width}x{info.height} @ {info.fps:g} fps, {info.frame_count} "
            f"frames, {duration:.0f} s · {os.cpu_count()} CPUs · {platform.processor() or '?'} · "
            f"OpenCV {cv2.__version__}"
        )
        rows = [("naive read() of every frame", *time_naive(clip), info.frame_count)]
        sampled = time_sampled(clip, fake_classify, args.every, args.batch_size)
        rows.append((f"sample every {args.every:g} s, fake model", *sampled, info.frame_count))
        if args.model:
            timed = time_sampled(clip, model_classify(args.model), args.every, args.batch_size)
            rows.append((f"sample every {args.every:g} s, {args.model}", *timed, info.frame_count))
        print(f"{'':42} {'source fr/s':>12} {'sampled fr/s':>13} {'x realtime':>11}")
        for name, count, seconds, source in rows:
            print(
                f"{name:42} {source / seconds:12.0f} {count / seconds:13.1f} "
                f"{duration / seconds:11.1f}"
            )


if __name__ == "__main__":
    main()
