"""Survey-scale predict: Darwin Core export, --resume, streaming, and torchrun sharding."""

from __future__ import annotations

import csv
import io
import itertools
import os
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from predict_helpers import (
    BLUE,
    GREEN,
    RED,
    SEGMENTS,
    clip,
    colour_info,
    colour_predictor,
    dive_exif,
    neutral_grey,
    photo,
)

from conftest import free_port, make_bundle
from marinelife.api.model import Model
from marinelife.cli import main
from marinelife.errors import MarineLifeError
from marinelife.infer.darwin_core import DWC_TERMS_NS, OCCURRENCE_COLUMNS, UNVERIFIED_STATUS
from marinelife.infer.predict_cli import write_predictions
from marinelife.infer.predictor import Predictor

THRESHOLD = 0.6  # the neutral grey (1/3 each) is unknown; the colours (~1.0) are not


@pytest.fixture
def survey(tmp_path) -> Path:
    """A dive folder: an EXIF photo, plain photos, an ambiguous one, a broken one, a video."""
    root = tmp_path / "survey"
    photo(root / "site-a" / "dive.jpg", RED, exif=dive_exif())
    photo(root / "site-a" / "fish.png", GREEN)
    photo(root / "site-b" / "grey.png", neutral_grey(colour_info(tmp_path)))
    (root / "site-b" / "bad.png").write_bytes(b"not a png")
    photo(root / "site-b" / "octopus.png", BLUE)
    clip(root / "site-c" / "dive.mp4", SEGMENTS)
    return root


def _run(predictor, inputs, **options):
    out, err = io.StringIO(), io.StringIO()
    code = write_predictions(predictor, [str(i) for i in inputs], out=out, err=err, **options)
    return code, out.getvalue(), err.getvalue()


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_darwin_core_archive_from_a_survey_folder(tmp_path, survey):
    predictor = colour_predictor(tmp_path, threshold=THRESHOLD)
    code, out, err = _run(predictor, [survey], fmt="dwc", out_dir=tmp_path / "records")
    assert code == 1 and "bad.png" in err  # the broken photo is named, the rest exported
    records = tmp_path / "records"
    header = (records / "occurrence.txt").read_text().splitlines()[0].split("\t")
    assert header == list(OCCURRENCE_COLUMNS)
    rows = _table(records / "occurrence.txt")
    required = ("occurrenceID", "basisOfRecord", "scientificName", "eventDate", "identifiedBy")
    assert all(name in header for name in required)
    assert all(r["basisOfRecord"] == "MachineObservation" and r["scientificName"] for r in rows)
    for r in rows:
        if r["eventDate"]:
            datetime.fromisoformat(r["eventDate"])  # valid ISO 8601 or empty, never invented
    by_media = {r["associatedMedia"]: r for r in rows}
    dive = by_media[str(survey / "site-a" / "dive.jpg")]
    assert dive["eventDate"] == "2024-05-01T10:22:33+02:00"
    assert (dive["decimalLatitude"], dive["decimalLongitude"]) == ("-33.8652", "151.2083333")
    assert dive["minimumDepthInMeters"] == dive["maximumDepthInMeters"] == "18.5"
    assert dive["scientificName"] == "Selachimorpha" and "c0l0urm0de11" in dive["identifiedBy"]
    assert by_media[str(survey / "site-a" / "fish.png")]["eventDate"] == ""
    # Unknown (grey) and failed (bad) inputs are not occurrences; the video is one per class.
    assert not any("grey" in m or "bad" in m for m in by_media)
    video = [r for r in rows if "dive.mp4" in r["associatedMedia"]]
    assert [r["vernacularName"] for r in video] == ["Sharks", "Fish", "Octopus"]
    assert [r["associatedMedia"].split("#")[1] for r in video] == ["t=0.0", "t=2.0", "t=4.0"]
    assert "video: 2 sampled frame(s)" in video[0]["identificationRemarks"]
    assert len(rows) == 6 and len({r["occurrenceID"] for r in rows}) == 6
    # meta.xml names every column, in order, with column 0 as the record id.
    core = ET.parse(records / "meta.xml").getroot()[0]
    fields = [(int(f.get("index")), f.get("term")) for f in core if f.tag.endswith("field")]
    assert fields == [(i, DWC_TERMS_NS + c) for i, c in enumerate(OCCURRENCE_COLUMNS)]
    assert core.find("{*}id").get("index") == "0"
    with zipfile.ZipFile(records / "dwca.zip") as archive:
        assert sorted(archive.namelist()) == ["meta.xml", "occurrence.txt"]
    # Stable IDs: another run (a copy of the survey elsewhere, too) gives the same records.
    again = tmp_path / "again"
    _run(colour_predictor(tmp_path, threshold=THRESHOLD), [survey], fmt="dwc", out_dir=again)
    assert (again / "occurrence.txt").read_text() == (records / "occurrence.txt").read_text()
    # The same predictions from Python give the same table.
    model = Model(colour_predictor(tmp_path, threshold=THRESHOLD))
    model.to_dwc(model.predict(survey, top_k=3), tmp_path / "from-python")
    assert _table(tmp_path / "from-python" / "occurrence.txt") == rows


def test_unknown_kept_only_when_asked_and_taxonomy_checked_first(tmp_path, survey):
    predictor = colour_predictor(tmp_path, threshold=THRESHOLD)
    _run(predictor, [survey], fmt="dwc", out_dir=tmp_path / "r", include_unknown=True)
    [grey] = [
        r for r in _table(tmp_path / "r" / "occurrence.txt") if "grey" in r["associatedMedia"]
    ]
    assert (
        grey["scientificName"] == ""
        and grey["identificationVerificationStatus"] == UNVERIFIED_STATUS
    )
    taxonomy = tmp_path / "taxa.csv"
    taxonomy.write_text("class,scientificName,taxonRank\nSharks,Selachimorpha,superorder\n")
    fresh = colour_predictor(tmp_path)
    with pytest.raises(MarineLifeError, match="'Fish', 'Octopus'.*not in the taxonomy"):
        _run(fresh, [survey], fmt="dwc", out_dir=tmp_path / "t", taxonomy=taxonomy)
    assert fresh.backend.images == 0 and not (tmp_path / "t").exists()  # refused before work
    with pytest.raises(MarineLifeError, match="needs --out"):
        _run(fresh, [survey], fmt="dwc")
    with pytest.raises(MarineLifeError, match="--format dwc only"):
        _run(fresh, [survey], fmt="csv", include_unknown=True)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_resume_predicts_nothing_twice(tmp_path, fmt):
    folder = tmp_path / "photos"
    for i in range(7):
        photo(folder / f"a{i}.png", (RED, GREEN, BLUE)[i % 3])
    clip(folder / "z.mp4", SEGMENTS)
    name = f"predictions.{fmt}"
    _run(colour_predictor(tmp_path), [folder], fmt=fmt, out_dir=tmp_path / "whole", batch_size=2)
    reference = (tmp_path / "whole" / name).read_bytes()
    # An interrupted run: three photos written, the fourth cut off mid-row.
    out = tmp_path / "out"
    out.mkdir()
    lines = reference.split(b"\n")
    (out / name).write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:25])
    predictor = colour_predictor(tmp_path)
    code, _, err = _run(predictor, [folder], fmt=fmt, out_dir=out, resume=True, batch_size=2)
    assert code == 0, err
    assert predictor.backend.images == 4 + 6  # 4 photos left + the video's 6 sampled frames
    assert (out / name).read_bytes() == reference  # same rows, each input once, in order
    again = colour_predictor(tmp_path)
    assert _run(again, [folder], fmt=fmt, out_dir=out, resume=True)[0] == 0
    assert again.backend.images == 0 and (out / name).read_bytes() == reference
    # Never replaced without being asked; --overwrite replaces.
    with pytest.raises(MarineLifeError, match="already holds files"):
        _run(colour_predictor(tmp_path), [folder], fmt=fmt, out_dir=out)
    assert _run(colour_predictor(tmp_path), [folder], fmt=fmt, out_dir=out, overwrite=True)[0] == 0
    assert (out / name).read_bytes() == reference
    if fmt == "csv":  # other columns cannot be continued
        with pytest.raises(MarineLifeError, match="other options"):
            _run(colour_predictor(tmp_path), [folder], fmt=fmt, out_dir=out, resume=True, top_k=1)


def test_paths_stream_through_a_bounded_window(tmp_path):
    files = [photo(tmp_path / f"{c}.png", rgb) for c, rgb in zip("rgb", (RED, GREEN, BLUE))]
    consumed = 0

    def paths():
        nonlocal consumed
        for path in itertools.islice(itertools.cycle(files), 500):
            consumed += 1
            yield path

    predictor = colour_predictor(tmp_path)
    results = predictor.predict_files(paths(), batch_size=4, workers=2)
    first = next(results)
    assert first[1].label == "Sharks" and consumed <= 3 * 4 + 1  # not the whole list
    assert sum(1 for _ in results) == 499 and consumed == 500


def test_progress_bar_only_on_a_terminal_and_errors_in_rows(
    tiny_bundle, tmp_path, capsys, monkeypatch
):
    good = photo(tmp_path / "ok.png", RED)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"broken")
    monkeypatch.delenv("MARINELIFE_QUIET", raising=False)  # progress on, as for a user
    assert main(["predict", str(tiny_bundle), str(good), str(bad), "--format", "csv"]) == 1
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "file/s" not in captured.err  # stderr is not a tty
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["path"] for r in rows] == [str(good), str(bad)]
    assert rows[0]["error"] == "" and "not an image" in rows[1]["error"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["predict", str(tiny_bundle), str(good), "--format", "csv"]) == 0
    assert "predict:" in terminal.getvalue() and "\r" in terminal.getvalue()  # the bar


@pytest.mark.slow
def test_process_pool_decodes_the_same(tmp_path):
    files = [photo(tmp_path / f"{i}.png", (RED, GREEN, BLUE)[i % 3]) for i in range(6)]
    predictor = Predictor.load(make_bundle(tmp_path / "run"))
    threads = [p.confidence for _, p in predictor.predict_files(files, batch_size=4)]
    procs = predictor.predict_files(files, batch_size=4, pool="process", workers=2)
    assert [p.confidence for _, p in procs] == pytest.approx(threads, abs=1e-6)


@pytest.mark.slow
def test_torchrun_two_ranks_cover_every_input_exactly_once(tmp_path, survey):
    bundle = make_bundle(tmp_path / "run")
    args = [str(bundle), str(survey), str(tmp_path / "nope.jpg"), "--format", "csv", "-q"]
    assert main(["predict", *args, "--out", str(tmp_path / "single")]) == 1
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "-m", "marinelife", "predict", *args,
        "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MARINELIFE_QUIET"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]  # bad.png and nope.jpg failed
    assert result.stderr.count("inputs failed") == 1  # rank 0 alone sums up

    def rows(name):
        with open(tmp_path / name / "predictions.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    single, ddp = rows("single"), rows("ddp")
    key = [(r["path"], r["frame"]) for r in single]
    assert [(r["path"], r["frame"]) for r in ddp] == key  # every input once, in input order
    assert len(key) == len(set(key)) and len({p for p, _ in key}) == 7
    assert [r["label"] for r in ddp] == [r["label"] for r in single]
    assert [bool(r["error"]) for r in ddp] == [bool(r["error"]) for r in single]
    assert not (tmp_path / "ddp" / ".parts").exists()
    assert (tmp_path / "ddp" / "dive.html").is_file()  # the video page, from rank 0
