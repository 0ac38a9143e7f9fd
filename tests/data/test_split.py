"""`marinelife split`: deterministic, stratified, duplicate-aware, never touching the source."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_check import corrupt_png, make_photo_dataset, noise_photo

from conftest import run_check, tree_digest
from marinelife.data.scan import scan_dataset
from marinelife.data.split import SPLIT_CSV_COLUMNS, assign_groups, run_split
from marinelife.errors import MarineLifeError

COUNTS = {"crab": 20, "eel": 13, "fish": 9}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    return make_photo_dataset(tmp_path / "src", {"all": COUNTS}, flat=True)


def split(src: Path, dst: Path, **kwargs) -> list[dict[str, str]]:
    options = {"val": 0.15, "test": 0.15, "seed": 3, "mode": "copy", **kwargs}
    run_split(src, dst, **options)
    return read_csv(dst / "split.csv")


def test_same_seed_same_split(flat: Path, tmp_path: Path) -> None:
    split(flat, tmp_path / "a")
    split(flat, tmp_path / "b")
    split(flat, tmp_path / "c", seed=4)
    first = (tmp_path / "a/split.csv").read_bytes()
    assert first == (tmp_path / "b/split.csv").read_bytes()
    assert first != (tmp_path / "c/split.csv").read_bytes()
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_stratified_and_complete(flat: Path, tmp_path: Path) -> None:
    before = tree_digest(flat)
    rows = split(flat, tmp_path / "out")
    assert tuple(rows[0]) == SPLIT_CSV_COLUMNS
    assert len(rows) == sum(COUNTS.values())
    for name, n in COUNTS.items():
        per = {
            s: sum(r["class"] == name and r["split"] == s for r in rows) for s in ("val", "test")
        }
        for s, count in per.items():
            assert abs(count - n * 0.15) <= 1, (name, s, count)
    layout = scan_dataset(tmp_path / "out")
    assert sum(len(v) for v in layout.splits.values()) == sum(COUNTS.values())
    for row in rows:
        copied = tmp_path / "out" / row["file"]
        assert copied.read_bytes() == (flat / row["source"]).read_bytes()
    assert tree_digest(flat) == before
    assert run_check(tmp_path / "out", as_json=False, min_size=16) == 0


def test_duplicates_stay_together(flat: Path, tmp_path: Path) -> None:
    original = flat / "eel/eel_all_004.jpg"
    shutil.copyfile(original, flat / "eel/copy.jpg")
    Image.open(original).resize((40, 30), Image.LANCZOS).save(flat / "eel/small.jpg")
    Image.open(original).convert("L").save(flat / "eel/grey.jpg")
    members = {"eel/eel_all_004.jpg", "eel/copy.jpg", "eel/small.jpg", "eel/grey.jpg"}
    for seed in range(4):
        rows = split(flat, tmp_path / f"out{seed}", seed=seed)
        group = [r for r in rows if r["source"] in members]
        assert len(group) == 4
        assert len({r["split"] for r in group}) == 1 and len({r["group"] for r in group}) == 1
        others = [r["group"] for r in rows if r["source"] not in members]
        assert len(set(others)) == len(others)  # unrelated photos are never grouped


def test_conflicting_and_bad_files_are_left_out(flat: Path, tmp_path: Path, capsys) -> None:
    shutil.copyfile(flat / "crab/crab_all_001.jpg", flat / "eel/looks_like_eel.jpg")
    (flat / "fish/broken.png").write_bytes(corrupt_png(np.random.default_rng(1)))
    (flat / "fish/empty.jpg").write_bytes(b"")
    before = tree_digest(flat)
    rows = split(flat, tmp_path / "out")
    sources = {r["source"] for r in rows}
    left_out = {"crab/crab_all_001.jpg", "eel/looks_like_eel.jpg", "fish/broken.png",
                "fish/empty.jpg"}  # fmt: skip
    assert not sources & left_out and len(rows) == sum(COUNTS.values()) - 1
    excluded = {r["source"]: r["reason"] for r in read_csv(tmp_path / "out/excluded.csv")}
    assert set(excluded) == left_out
    assert "conflicting labels (crab, eel)" in excluded["eel/looks_like_eel.jpg"]
    assert excluded["fish/empty.jpg"].startswith("zero-byte")
    assert "Left out 4 files" in capsys.readouterr().out
    assert tree_digest(flat) == before


def test_split_layout_source_is_pooled(tmp_path: Path) -> None:
    src = make_photo_dataset(tmp_path / "src", {"train": 7, "val": 2, "test": 2})
    # Same file name in two splits of one class: both must survive under distinct names.
    noise_photo(np.random.default_rng(5)).save(src / "test/crab/crab_val_000.jpg")
    rows = split(src, tmp_path / "out")
    assert len(rows) == 34 and len({r["file"] for r in rows}) == 34
    assert {r["source"].split("/")[0] for r in rows} == {"train", "val", "test"}
    assert scan_dataset(tmp_path / "out").classes == ["crab", "eel", "fish"]


def test_link_mode_hard_links(flat: Path, tmp_path: Path) -> None:
    before = tree_digest(flat)
    rows = split(flat, tmp_path / "out", mode="link")
    row = rows[0]
    assert (tmp_path / "out" / row["file"]).stat().st_ino == (flat / row["source"]).stat().st_ino
    assert tree_digest(flat) == before


def test_link_falls_back_to_copy(flat: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("marinelife.data.split.os.link", no_links)
    rows = split(flat, tmp_path / "out", mode="link")
    assert len(rows) == sum(COUNTS.values())
    assert "copying instead" in caplog.text


def test_refusals(flat: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    for dst, needle in [(full, "not empty"), (flat / "out", "inside the source"),
                        (flat, "inside the source"), (full / "keep.txt", "is a file")]:  # fmt: skip
        with pytest.raises(MarineLifeError, match=needle):
            run_split(flat, dst, val=0.15, test=0.15, seed=1, mode="copy")
    with pytest.raises(MarineLifeError, match="fractions"):
        run_split(flat, tmp_path / "x", val=0.6, test=0.5, seed=1, mode="copy")
    with pytest.raises(MarineLifeError, match="does not exist"):
        run_split(tmp_path / "nope", tmp_path / "y", val=0.1, test=0.1, seed=1, mode="copy")
    assert (full / "keep.txt").read_text() == "x" and not (flat / "out").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_empty_destination_folder_is_accepted(flat: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert split(flat, tmp_path / "out")


def test_too_few_images_in_a_class(tmp_path: Path) -> None:
    src = make_photo_dataset(tmp_path / "src", {"all": {"crab": 9, "eel": 2}}, flat=True,
                             classes=("crab", "eel"))  # fmt: skip
    with pytest.raises(MarineLifeError, match="'eel' \\(2\\)"):
        run_split(src, tmp_path / "out", val=0.15, test=0.15, seed=1, mode="copy")
    assert not (tmp_path / "out").exists()


def test_assign_groups_hits_targets() -> None:
    labels = ["a"] * 40 + ["b"] * 7
    got = assign_groups(labels, [1] * 47, val=0.2, test=0.1, seed=0)
    a = got[:40]
    assert (a.count("train"), a.count("val"), a.count("test")) == (28, 8, 4)
    b = got[40:]
    assert (b.count("val"), b.count("test")) == (1, 1)
    sized = assign_groups(["a"] * 3, [5, 5, 1], val=0.15, test=0.15, seed=0)
    assert sorted(sized) == ["test", "train", "val"]
    assert got == assign_groups(labels, [1] * 47, val=0.2, test=0.1, seed=0)
    assert math.isclose(sum(s == "test" for s in got) / 47, 0.1, abs_tol=0.03)
