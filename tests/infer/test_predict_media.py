"""Videos and photo metadata through the real predict path (CLI code and ``Model.predict``).

The model is the colour model of predict_helpers: what it answers for each generated frame and
photo is known, so labels, timestamps and EXIF fields are checked exactly.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from predict_helpers import (
    DIVE_METADATA,
    FPS,
    GREEN,
    RED,
    SEGMENTS,
    clip,
    colour_predictor,
    dive_exif,
    expected,
    photo,
)

import marinelife as ml
from marinelife.api.model import Model
from marinelife.errors import MarineLifeError
from marinelife.infer.predict_cli import write_predictions


def _run(predictor, inputs, **options):
    out, err = io.StringIO(), io.StringIO()
    code = write_predictions(predictor, [str(i) for i in inputs], out=out, err=err, **options)
    return code, out.getvalue(), err.getvalue()


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(("every", "step"), [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5)])
def test_video_frames_get_the_right_labels_at_the_right_times(tmp_path, monkeypatch, every, step):
    monkeypatch.chdir(tmp_path)
    video = clip(tmp_path / "dive.mp4", SEGMENTS)
    code, out, err = _run(colour_predictor(tmp_path), [video], fmt="csv", every=every, top_k=2)
    assert code == 0, err
    rows = _csv(out)
    times = [float(r["time_s"]) for r in rows]
    assert times == pytest.approx([k * step for k in range(int(6 / step))])
    assert [int(r["frame"]) for r in rows] == [round(t * FPS) for t in times]
    assert [r["label"] for r in rows] == [expected(t) for t in times]
    assert {r["path"] for r in rows} == {str(video)} and not any(r["error"] for r in rows)
    assert all(r["unknown"] == "false" and r["top1_label"] == r["label"] for r in rows)
    # The page it names: timeline, summary table and key frames, in a fresh folder.
    page = tmp_path / "dive-predict" / "dive.html"
    assert f"video page: {page.relative_to(tmp_path)}" in err
    html = page.read_text()
    assert "dive_timeline.png" in html and html.count("<figure><img src='frames/") >= 3
    summary = _csv((page.parent / "videos.csv").read_text())
    assert [(s["label"], float(s["first_s"])) for s in summary] == [
        ("Sharks", 0.0), ("Fish", 2.0), ("Octopus", 4.0)
    ]  # fmt: skip
    assert all(int(s["frames"]) == round(2 / step) for s in summary)
    assert all(float(s["max_confidence"]) >= float(s["mean_confidence"]) > 0.9 for s in summary)
    # A second run never replaces that page.
    assert _run(colour_predictor(tmp_path), [video], fmt="csv", every=every)[0] == 0
    assert (tmp_path / "dive-predict-2" / "dive.html").is_file()


def test_fps_and_json_rows(tmp_path):
    video = clip(tmp_path / "dive.mov", SEGMENTS)
    out_dir = tmp_path / "out"
    code, out, _ = _run(colour_predictor(tmp_path), [video], fmt="json", fps=0.5, out_dir=out_dir)
    assert code == 0 and out == ""  # with --out, the results are files
    rows = json.loads((out_dir / "predictions.json").read_text())
    assert [(r["frame"], r["time_s"], r["label"]) for r in rows] == [
        (0, 0.0, "Sharks"), (20, 2.0, "Fish"), (40, 4.0, "Octopus")
    ]  # fmt: skip
    assert json.loads((out_dir / "videos.json").read_text())[0]["label"] == "Sharks"
    assert (out_dir / "dive.html").is_file()


def test_cut_off_and_unreadable_videos_are_named_and_the_rest_continue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    whole = clip(tmp_path / "whole.mkv", SEGMENTS).read_bytes()
    cut = tmp_path / "a_cut.mkv"
    cut.write_bytes(whole[: len(whole) // 2])  # frames before the cut still decode
    broken = tmp_path / "b_broken.mp4"
    data = clip(tmp_path / "x.mp4", SEGMENTS).read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # an MP4 cut before its index opens not at all
    after = photo(tmp_path / "c_after.png", GREEN)
    code, out, err = _run(colour_predictor(tmp_path), [cut, broken, after], fmt="csv")
    assert code == 1
    rows = _csv(out)
    cut_rows = [r for r in rows if r["path"] == str(cut)]
    frames, [cut_error] = cut_rows[:-1], cut_rows[-1:]
    assert frames and all(r["label"] == expected(float(r["time_s"])) for r in frames)
    assert cut_error["frame"] == "" and "truncated" in cut_error["error"]
    [broken_row] = [r for r in rows if r["path"] == str(broken)]
    assert broken_row["label"] == "" and "cannot open as a video" in broken_row["error"]
    assert rows[-1]["path"] == str(after) and rows[-1]["label"] == "Fish"  # the rest continued
    lines = err.splitlines()
    assert sum(str(cut) in line for line in lines) == 1
    assert sum(str(broken) in line for line in lines) == 1
    assert "2 of 3 inputs failed" in err
    # The page marks the cut video.
    assert "truncated" in (tmp_path / "a_cut-predict" / "a_cut.html").read_text()


def test_exif_written_with_pillow_comes_back_in_predict_output(tmp_path):
    dive = photo(tmp_path / "dive.jpg", RED, exif=dive_exif())
    plain = photo(tmp_path / "plain.jpg", GREEN)
    code, out, _ = _run(colour_predictor(tmp_path), [dive, plain], fmt="csv")
    assert code == 0
    with_exif, without = _csv(out)
    assert with_exif["datetime_original"] == DIVE_METADATA["datetime_original"]
    for key in ("latitude", "longitude", "altitude"):
        assert float(with_exif[key]) == pytest.approx(DIVE_METADATA[key], abs=1e-6)
    assert (with_exif["make"], with_exif["model"]) == ("OM Digital Solutions", "TG-7")
    assert all(without[key] == "" for key in DIVE_METADATA)  # missing stays empty
    code, out, _ = _run(colour_predictor(tmp_path), [dive], fmt="json")
    assert json.loads(out)[0]["metadata"] == pytest.approx(DIVE_METADATA)
    [pred] = Model(colour_predictor(tmp_path)).predict(dive)
    assert pred.metadata == pytest.approx(DIVE_METADATA) and pred.label == "Sharks"


def test_model_predict_on_a_video_and_video_summary(tmp_path):
    video = clip(tmp_path / "dive.mp4", SEGMENTS)
    image = photo(tmp_path / "red.png", RED)
    model = Model(colour_predictor(tmp_path))
    preds = model.predict([image, video], every=2.0, top_k=2)
    assert preds[0].frame is None and preds[0].label == "Sharks"
    frames = preds[1:]
    assert [(p.frame, p.time_s, p.label) for p in frames] == [
        (0, 0.0, "Sharks"), (20, 2.0, "Fish"), (40, 4.0, "Octopus")
    ]  # fmt: skip
    assert all(p.path == str(video) and len(p.top_k) == 2 for p in frames)
    assert frames[1].to_dict()["time_s"] == 2.0
    summary = ml.video_summary(preds)
    assert [(s.label, s.first_s, s.last_s, s.frames) for s in summary] == [
        ("Sharks", 0.0, 0.0, 1), ("Fish", 2.0, 2.0, 1), ("Octopus", 4.0, 4.0, 1)
    ]  # fmt: skip
    cut = tmp_path / "cut.mkv"
    data = clip(tmp_path / "w.mkv", SEGMENTS).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    *kept, last = model.predict(cut)
    assert last.path == str(cut) and "truncated" in last.error and last.frame is None
    assert kept and all(not p.error and p.label == expected(p.time_s) for p in kept)
    with pytest.raises(MarineLifeError, match="--every"):
        model.predict(video, every=0)
