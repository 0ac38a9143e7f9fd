"""`check` and `split` number duplicate groups by one rule: "group 2" is the same photos in both."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import marinelife as ml
from marinelife.data.hashing import group_numbers
from marinelife.data.synthetic import make_synthetic_dataset


def test_group_numbers_rule():
    # Components as index tuples; keys order them. Duplicate groups first from 1, then singles.
    numbers = group_numbers([(0,), (1, 4), (2,), (3, 5)], ["e", "d", "c", "a", "b", "f"])
    assert numbers == [4, 2, 3, 1]


def test_check_and_split_agree(tmp_path: Path):
    photos = make_synthetic_dataset(tmp_path / "photos", num_classes=3, counts={"all": 8},
                                    size=32, flat=True)  # fmt: skip
    disc = sorted((photos / "synthetic disc").glob("*.png"))
    square = sorted((photos / "synthetic square").glob("*.png"))
    shutil.copy(disc[0], photos / "synthetic disc" / "zz copy.png")  # same class: kept together
    shutil.copy(square[1], photos / "synthetic triangle" / "a copy.png")  # conflicting labels
    report = ml.check(photos).to_dict()
    by_check = {m["path"]: g["id"] for g in report["duplicate_groups"] for m in g["members"]}
    assert sorted(set(by_check.values())) == [1, 2]  # numbered from 1
    out = ml.split(photos, tmp_path / "data")
    rows = []
    for name in ("split.csv", "excluded.csv"):
        with (out / name).open(newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    by_split = {r["source"]: int(r["group"]) for r in rows if r["source"] in by_check}
    assert by_split == by_check
