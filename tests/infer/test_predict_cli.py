"""`marinelife predict`: files, folders and globs; one broken file reported, the rest predicted."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import pytest

from conftest import image_bytes
from marinelife.cli import main
from marinelife.infer.predict_cli import csv_header, expand_inputs


@pytest.fixture
def photos(tiny_dataset, tmp_path):
    folder = tmp_path / "dive"
    shutil.copytree(tiny_dataset / "test", folder)
    broken = folder / "synthetic disc" / "broken.png"
    broken.write_bytes((folder / "synthetic disc").glob("*.png").__next__().read_bytes()[:60])
    (folder / "notes.txt").write_text("not an image")
    return folder


def _predict(capsys, *args):
    code = main(["predict", *map(str, args), "-q"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_with_one_broken_file_predicts_the_rest_and_exits_1(tiny_bundle, photos, capsys):
    code, out, err = _predict(capsys, tiny_bundle, photos, "--format", "csv", "--top-k", "2")
    assert code == 1
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:7] == ["path", "label", "confidence", "top1_label", "top1_prob", "top2_label",
                           "top2_prob"]  # fmt: skip
    assert rows[0][-1] == "error"
    # One row per input, the broken one included with its reason (so rows join back to inputs).
    assert sorted(r[0] for r in rows[1:]) == sorted(map(str, photos.rglob("*.png")))
    good = [r for r in rows[1:] if not r[-1]]
    [bad] = [r for r in rows[1:] if r[-1]]
    assert bad[0].endswith("broken.png") and bad[1] == bad[2] == "" and "broken.png" not in bad[-1]
    assert all(r[1] == r[3] and float(r[2]) == float(r[4]) for r in good)
    # The broken file is named on its own line on stderr; notes.txt in a folder is ignored.
    broken_lines = [line for line in err.splitlines() if "broken.png" in line]
    assert len(broken_lines) == 1 and "notes.txt" not in err
    assert "1 of" in err


def test_globs_files_and_json(tiny_bundle, photos, capsys):
    pattern = str(photos / "synthetic s*" / "*.png")
    one = next((photos / "synthetic star").glob("*.png"))
    code, out, _ = _predict(capsys, tiny_bundle, pattern, one, "--format", "json", "--tta", "flip")
    assert code == 0
    results = json.loads(out)
    expected = {str(p) for p in photos.glob("synthetic s*/*.png")}
    assert {r["path"] for r in results} == expected  # the explicit file is not repeated
    first = results[0]
    assert list(first)[:3] == ["path", "label", "confidence"]
    assert len(first["top_k"]) == 3 and first["top_k"][0]["label"] == first["label"]


def test_table_and_missing_inputs(tiny_bundle, photos, tmp_path, capsys):
    code, out, err = _predict(
        capsys, tiny_bundle, photos / "synthetic star", tmp_path / "nope.jpg", str(tmp_path / "*.x")
    )
    assert code == 1
    assert out.splitlines()[0].split()[:3] == ["path", "label", "confidence"]
    assert "nope.jpg: no such file" in err and "no image files match" in err


def test_user_errors_exit_2(tiny_bundle, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    image = tmp_path / "a.png"
    image.write_bytes(image_bytes())
    assert main(["predict", str(tmp_path / "no-model"), str(image)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Nothing to predict at all: one error line naming the input, exit 2.
    assert main(["predict", str(tiny_bundle), str(empty), str(tmp_path / "*.nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "no images" in err[0]
    paths, problems = expand_inputs([empty])
    assert paths == [] and problems == [(str(empty), "folder contains no images")]
    # The columns added since (frame, EXIF, error) come after the ones scripts already read.
    assert csv_header(1)[:5] == ["path", "label", "confidence", "top1_label", "top1_prob"]


def test_table_columns_stay_aligned_with_wide_file_names(tiny_bundle, photos, capsys):
    """A CJK file name takes two terminal columns per character; the table pads by columns."""
    from marinelife.logutil import display_width

    source = next((photos / "synthetic star").glob("*.png"))
    wide = photos / "synthetic star" / "海星の写真.png"
    shutil.copyfile(source, wide)
    code, out, _ = _predict(capsys, tiny_bundle, source, wide)
    assert code == 0
    lines = out.splitlines()
    # The (right-aligned) confidence column ends at the same terminal column on every row.
    ends = [display_width(line[: re.search(r"\d\.\d{3}", line).end()]) for line in lines[1:]]
    assert len(ends) == 2 and ends[0] == ends[1]
    assert display_width("海星") == 4 and display_width("e\u0301") == 1
