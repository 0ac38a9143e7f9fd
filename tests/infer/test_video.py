"""Video sampling, classification, summaries and the video page, on tiny generated clips."""

from __future__ import annotations

import math
import pickle
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.infer.video import (
    THREAD_PREFIX,
    VideoTruncatedError,
    clock,
    is_video_path,
    predict_video,
    probe_video,
    sample_frames,
    summarize,
)
from marinelife.infer.video_report import KeyFrames, read_frames, write_video_page

FPS = 10
# (BGR colour, seconds): red 0-2 s, blue 2-4 s, green 4-5 s (which the fake model rejects).
SEGMENTS = (((0, 0, 255), 2), ((255, 0, 0), 2), ((0, 255, 0), 1))


def write_clip(path: Path, segments=SEGMENTS, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (64, 64))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} with {fourcc}"
    for bgr, seconds in segments:
        frame = np.full((64, 64, 3), bgr, dtype=np.uint8)
        for _ in range(seconds * FPS):
            writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "dive.mp4")


def classify_by_colour(names=None):
    """Labels each RGB frame by its dominant channel; green is rejected as "unknown"."""
    names = names or {}

    def classify(images: list[np.ndarray]) -> list[SimpleNamespace]:
        out = []
        for image in images:
            assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
            colour = ("red", "green", "blue")[int(image.reshape(-1, 3).mean(0).argmax())]
            label = names.get(colour, colour)
            confidence = 0.9 if colour == "red" else 0.7
            out.append(
                SimpleNamespace(
                    label="unknown" if colour == "green" else label,
                    confidence=confidence,
                    top_k=[(label, confidence), ("other", round(1 - confidence, 2))],
                    rejected=colour == "green",
                )
            )
        return out

    return classify


def expected_label(t: float) -> str:
    return "red" if t < 2 else "blue" if t < 4 else "unknown"


def video_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_is_video_path():
    assert is_video_path("a/DIVE.MP4") and is_video_path(Path("x.mkv"))
    assert not is_video_path("photo.jpg") and not is_video_path("._dive.mp4")


def test_clock():
    assert clock(0) == "0:00.0" and clock(75.25) == "1:15.2" and clock(3723.0) == "1:02:03.0"


@pytest.mark.parametrize(
    ("options", "step"), [({}, 1.0), ({"every": 0.5}, 0.5), ({"fps": 2}, 0.5), ({"every": 2}, 2)]
)
def test_sampled_frames_have_the_right_times_and_labels(clip, options, step):
    results = list(predict_video(clip, classify_by_colour(), batch_size=3, **options))
    times = [r.time_s for r in results]
    assert times == pytest.approx([k * step for k in range(math.ceil(5 / step))])
    assert [r.frame for r in results] == [round(t * FPS) for t in times]
    assert [r.label for r in results] == [expected_label(t) for t in times]
    assert all(r.file == str(clip) for r in results)
    assert not video_threads()


def test_frames_are_rgb_and_never_sampled_twice(clip):
    frames = list(sample_frames(clip, fps=30))  # faster than the video: every frame once
    assert [f.index for f in frames] == list(range(50))
    assert frames[0].rgb.shape == (64, 64, 3) and frames[0].rgb.dtype == np.uint8
    assert frames[0].rgb[..., 0].mean() > 200 and frames[0].rgb[..., 2].mean() < 50  # red, RGB
    info = probe_video(clip)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 64, FPS, 50)


def test_row_and_summary(clip):
    results = list(predict_video(clip, classify_by_colour(), every=0.5))
    assert results[1].to_dict() == {
        "file": str(clip),
        "frame": 5,
        "time_s": 0.5,
        "label": "red",
        "confidence": 0.9,
        "top_k": "red:0.9;other:0.1",
        "unknown": False,
    }
    red, blue, unknown = summarize(results)
    assert (red.label, red.first_s, red.last_s, red.frames) == ("red", 0.0, 1.5, 4)
    assert (blue.label, blue.first_s, blue.last_s, blue.frames) == ("blue", 2.0, 3.5, 4)
    assert blue.max_confidence == blue.mean_confidence == pytest.approx(0.7)
    # Rejected frames are not a class: they get one row of their own, listed last.
    assert unknown.unknown and (unknown.first_s, unknown.last_s, unknown.frames) == (4.0, 4.5, 2)
    assert red.to_dict()["label"] == "red" and red.to_dict()["frames"] == 4


def test_truncated_mid_stream_yields_the_good_frames_then_raises(tmp_path):
    whole = write_clip(tmp_path / "cut.mkv")
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(VideoTruncatedError) as caught:
        for result in predict_video(whole, classify_by_colour(), every=0.5, batch_size=4):
            seen.append(result)
    error = caught.value
    assert isinstance(error, ImageDecodeError) and "cut.mkv" in str(error)
    assert "truncated" in str(error) and "\n" not in str(error)
    assert 0 < error.until_s < 5 and error.expected == 50 and 0 < error.frames_read < 50
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    # Every frame decoded before the cut was classified and handed over, with the right label.
    assert seen and seen[-1].time_s <= error.until_s
    assert [r.time_s for r in seen] == pytest.approx([k * 0.5 for k in range(len(seen))])
    assert all(r.label == expected_label(r.time_s) for r in seen)
    assert not video_threads()


def test_truncated_mp4_and_non_videos_are_refused(tmp_path, clip):
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    for bad in (cut, text, tmp_path / "missing.mp4", tmp_path / "empty.mov"):
        if bad.name == "empty.mov":
            bad.write_bytes(b"")
        with pytest.raises(ImageDecodeError, match=re.escape(bad.name)):
            list(sample_frames(bad))
    assert not video_threads()


def test_early_close_and_errors_stop_the_worker(clip):
    frames = sample_frames(clip, every=0.1)
    first = next(frames)
    assert first.index == 0 and len(video_threads()) == 1
    frames.close()
    assert not video_threads()

    def broken(images):
        raise ValueError("model exploded")

    with pytest.raises(ValueError, match="exploded"):
        list(predict_video(clip, broken, every=0.1, batch_size=2))
    assert not video_threads()

    for result in predict_video(clip, classify_by_colour(), every=0.1):
        if result.frame >= 3:
            break  # the for loop closes the generator
    assert not video_threads()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"every": 0}, "--every"),
        ({"every": -1.0}, "--every"),
        ({"every": math.nan}, "--every"),
        ({"every": math.inf}, "--every"),
        ({"every": "1"}, "--every"),
        ({"every": None, "fps": 0}, "--fps"),
        ({"every": None, "fps": -2}, "--fps"),
        ({"every": 0.5, "fps": 2}, "mutually exclusive"),
    ],
)
def test_option_validation(clip, options, named):
    with pytest.raises(MarineLifeError, match=re.escape(named)):
        sample_frames(clip, **options)  # raised at call time, before any iteration
    with pytest.raises(MarineLifeError, match=re.escape(named)):
        predict_video(clip, classify_by_colour(), **options)


def test_batch_size_validation(clip):
    with pytest.raises(MarineLifeError, match="--batch-size"):
        predict_video(clip, classify_by_colour(), batch_size=0)


def _key_frame_sources(page: Path) -> list[str]:
    return re.findall(r"<img src='(frames/[^']+)'", page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("streamed", [True, False])
def test_video_page_escapes_names_and_links_key_frames(tmp_path, clip, streamed):
    keys = KeyFrames(per_class=3) if streamed else None
    results = list(
        predict_video(
            clip, classify_by_colour({"blue": "<b>"}), every=0.5, on_frame=keys, batch_size=3
        )
    )
    out = tmp_path / "report"
    page = write_video_page(results, summarize(results), out, title="Dive <1>", key_frames=keys)
    assert page == out / "dive.html"
    text = page.read_text(encoding="utf-8")
    assert "<b>" not in text and "&lt;b&gt;" in text and "Dive &lt;1&gt;" in text
    sources = _key_frame_sources(page)
    assert len(sources) == 6  # 3 best of red + 3 best of "<b>"; unknown frames have none
    for source in sources:
        assert (out / source).is_file() and "<" not in source
    assert re.search(r"<img src='figures/[^']+_timeline\.png'", text)
    assert all((out / p).is_file() for p in re.findall(r"src='(figures/[^']+)'", text))
    # The first red key frame is frame 0 (all red frames tie; the earliest wins) at 0:00.0.
    assert "_f0.jpg" in sources[0] and "0:00.0 · frame 0" in text


def test_page_for_several_videos_and_read_frames(tmp_path, clip):
    other = write_clip(tmp_path / "second.mp4", segments=(((255, 0, 0), 1),))
    classify = classify_by_colour()
    results = list(predict_video(clip, classify)) + list(predict_video(other, classify))
    page = write_video_page(
        results, summarize(results), tmp_path / "out", title="t", notes={str(other): "cut <x>"}
    )
    assert page.name == "index.html"
    text = page.read_text(encoding="utf-8")
    assert "dive.mp4" in text and "second.mp4" in text and "cut &lt;x&gt;" in text
    assert all((page.parent / s).is_file() for s in _key_frame_sources(page))
    frames = read_frames(clip, [0, 25, 999])
    assert sorted(frames) == [0, 25] and frames[25][..., 2].mean() > 200  # blue, RGB
