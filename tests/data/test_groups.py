"""Group sources (CSV, regex, folder level, EXIF day) and site-aware splits.

A group (site, dive, day) must never sit in two splits, whatever the labels, group sizes and
duplicates; each source kind resolves as documented; a bad CSV is one error naming its line.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image
from test_check import noise_photo

from conftest import tree_digest
from marinelife.cli import main
from marinelife.data.group_split import class_mix, split_components
from marinelife.data.groups import NO_DATE, merge_groups, parse_group_source, resolve_groups
from marinelife.data.split import run_split
from marinelife.errors import MarineLifeError

CLASSES = ("crab", "eel", "fish")


def site_photos(root: Path, sites: int = 6, per_site: int = 3, seed: int = 0) -> Path:
    """``root/CLASS/site-K/CLASS_K_I.jpg``: every site has every class."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        for k in range(sites):
            folder = root / name / f"site-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_site + k % 2):
                noise_photo(rng, (48, 40)).save(folder / f"{name}_{k}_{i}.jpg", quality=90)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def split_of_group(dst: Path) -> dict[str, set[str]]:
    """group → the splits its photos went to, from DST/groups.csv (paths start with the split)."""
    found: dict[str, set[str]] = {}
    for row in read_rows(dst / "groups.csv"):
        assert (dst / row["file"]).is_file()
        found.setdefault(row["group"], set()).add(row["file"].split("/")[0])
    return found


# ---------------------------------------------------------------- the grouping itself


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 5)),
        min_size=3,
        max_size=40,
    ),
    st.integers(0, 3),
)
def test_a_group_is_never_in_two_splits(items, seed):
    """Property: any labels, user groups and (same-class) duplicate sets: each stays whole."""
    labels = [f"c{label}" for label, _, _ in items]
    groups = [f"g{g}" for _, g, _ in items]
    by_copy: dict[tuple[str, int], list[int]] = {}
    for i, (_, _, copy) in enumerate(items):
        by_copy.setdefault((labels[i], copy), []).append(i)
    components = list(by_copy.values())
    component_of = {i: k for k, comp in enumerate(components) for i in comp}
    units = len(set(merge_groups([component_of[i] for i in range(len(items))], groups)))
    try:
        placed = split_components(components, labels, groups, val=0.2, test=0.2, seed=seed)
    except MarineLifeError as err:
        assert units < 3 and "every split needs a whole group" in str(err)
        return
    split_of = {i: placed[k] for k, comp in enumerate(components) for i in comp}
    assert set(split_of) == set(range(len(items)))
    for name in set(groups):
        assert len({split_of[i] for i in range(len(items)) if groups[i] == name}) == 1
    assert set(split_of.values()) == {"train", "val", "test"}  # every split gets a group
    again = split_components(components, labels, groups, val=0.2, test=0.2, seed=seed)
    assert again == placed


def test_merge_groups_is_the_union_of_both_groupings():
    duplicates = [0, 0, 1, 2, 3, 4]
    sites = ["a", "b", "b", "c", "d", None]
    assert merge_groups(duplicates, sites) == [0, 0, 0, 1, 2, 3]


def test_class_mix_distance():
    mix = class_mix(["train"] * 4 + ["test"] * 2, ["a", "a", "b", "b", "a", "a"])
    assert mix["overall_class_share"] == pytest.approx({"a": 4 / 6, "b": 2 / 6}, abs=1e-5)
    assert mix["splits"]["train"]["tvd"] == pytest.approx(1 / 6, abs=1e-5)
    assert mix["splits"]["test"]["max_abs_diff"] == pytest.approx(1 / 3, abs=1e-5)


# ---------------------------------------------------------------- each source kind


def test_source_syntax_and_refusals():
    assert parse_group_source("sites.csv").kind == "csv"
    assert parse_group_source("csv:sites.txt").path == Path("sites.txt")
    assert parse_group_source("level:-1").level == -1
    assert parse_group_source("exif-date").kind == "exif-date"
    for bad, needle in [("sites", "not a group source"), ("level:0", "non-zero"),
                        ("level:x", "non-zero"), ("regex:(", "not a valid regular")]:  # fmt: skip
        with pytest.raises(MarineLifeError, match=needle):
            parse_group_source(bad)


def test_regex_and_level_sources(tmp_path):
    root = tmp_path / "photos"
    paths = [root / "crab/reef-a/dive1/x_s1.jpg", root / "eel/reef-b/dive2/y_s2.jpg"]
    for p in paths:
        p.parent.mkdir(parents=True)
        p.touch()
    assert resolve_groups("regex:_(s\\d)\\.", root, paths) == ["s1", "s2"]
    assert resolve_groups("regex:reef-.", root, paths) == ["reef-a", "reef-b"]  # whole match
    assert resolve_groups("level:1", root, paths) == ["reef-a", "reef-b"]
    assert resolve_groups("level:-1", root, paths) == ["dive1", "dive2"]
    # In a split layout the train/val/test folder is skipped: level counts from the class.
    assert resolve_groups("level:1", root, [root / "test/crab/reef-c/z.jpg"]) == ["reef-c"]
    with pytest.raises(MarineLifeError, match="level 3.*'crab/reef-a/dive1/x_s1.jpg'"):
        resolve_groups("level:3", root, paths)
    with pytest.raises(MarineLifeError, match="does not match for 1 photo.*eel/"):
        resolve_groups("regex:reef-a", root, paths)


def test_exif_date_source(tmp_path):
    def photo(name: str, when: str | None) -> Path:
        exif = Image.Exif()
        if when:
            exif.get_ifd(ExifTags.IFD.Exif)[0x9003] = when  # DateTimeOriginal
        path = tmp_path / "crab" / name
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 12), (10, 80, 160)).save(path, "JPEG", exif=exif)
        return path

    paths = [photo("a.jpg", "2024:05:01 09:10:00"), photo("b.jpg", "2024:05:01 16:00:00"),
             photo("c.jpg", "2024:05:02 08:00:00"), photo("d.jpg", None)]  # fmt: skip
    assert resolve_groups("exif-date", tmp_path, paths) == [
        "2024-05-01", "2024-05-01", "2024-05-02", NO_DATE,
    ]  # fmt: skip


def test_csv_source(tmp_path):
    root = site_photos(tmp_path / "photos", sites=2, per_site=1)
    paths = sorted(root.rglob("*.jpg"))
    lines = ["File,Group"] + [f"./{p.relative_to(root).as_posix()},{p.parent.name}" for p in paths]
    (tmp_path / "sites.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    assert resolve_groups(tmp_path / "sites.csv", root, paths) == [p.parent.name for p in paths]


@pytest.mark.parametrize(
    "lines, needle",
    [
        (["path,site"], "line 1: the header must name the columns file,group"),
        (["file,group", "crab/site-0/nope.jpg,a"], "line 2: 'crab/site-0/nope.jpg' is not a file"),
        (["file,group", "crab/site-0/crab_0_0.jpg,"], "line 2: no group"),
        (["file,group", "crab/site-0/crab_0_0.jpg,a", "crab/site-0/crab_0_0.jpg,b"],
         "line 3: 'crab/site-0/crab_0_0.jpg' is in group 'a' on line 2"),
        (["file,group", "crab/site-0/crab_0_0.jpg,a"], "has no line for 8 photos"),
    ],
)  # fmt: skip
def test_bad_csv_is_one_line_naming_the_line(tmp_path, capsys, lines, needle):
    root = site_photos(tmp_path / "photos", sites=2, per_site=1)
    table = tmp_path / "sites.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = tree_digest(root)
    assert main(["split", str(root), str(tmp_path / "out"), "--groups", str(table)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(table) in err[0] and needle in err[0], err
    assert " — " in err[0]  # ... and the fix
    assert not (tmp_path / "out").exists() and tree_digest(root) == before


# ---------------------------------------------------------------- split --groups end to end


def test_split_by_site_keeps_sites_whole_and_reports_the_class_mix(tmp_path, capsys):
    root = site_photos(tmp_path / "photos")
    before = tree_digest(root)
    assert main(["split", str(root), str(tmp_path / "out"), "--groups", "level:1",
                 "--seed", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    sites = split_of_group(tmp_path / "out")
    assert len(sites) == 6 and all(len(s) == 1 for s in sites.values())
    assert {s for v in sites.values() for s in v} == {"train", "val", "test"}
    report = json.loads((tmp_path / "out/split_report.json").read_text())
    assert report["groups"] == "level:1" and set(report["splits"]) == {"train", "val", "test"}
    assert sum(report["groups_per_split"].values()) == 6
    for s in report["splits"].values():
        assert 0 <= s["tvd"] <= 1 and s["worst_class"] in CLASSES
    assert "Class mix against the whole" in out and "stay whole: train" in out
    assert tree_digest(root) == before
    # DST/groups.csv is a group source for the split folder itself (cv, evaluate).
    data = tmp_path / "out"
    files = sorted(p for p in data.rglob("*.jpg"))
    assert len(set(resolve_groups(data / "groups.csv", data, files))) == 6


def test_split_without_groups_also_reports_the_class_mix(tmp_path):
    root = site_photos(tmp_path / "photos", sites=3)
    run_split(root, tmp_path / "out", val=0.2, test=0.2, seed=0)
    report = json.loads((tmp_path / "out/split_report.json").read_text())
    assert report["groups"] is None and report["splits"]["val"]["tvd"] < 0.2
    assert not (tmp_path / "out/groups.csv").exists()


def test_duplicates_across_sites_pull_the_sites_together(tmp_path):
    root = site_photos(tmp_path / "photos", sites=8, per_site=2)
    # A copy of a site-0 photo filed under site 5: sites 0 and 5 must end up in one split.
    shutil.copyfile(root / "eel/site-0/eel_0_0.jpg", root / "eel/site-5/copy.jpg")
    for seed in range(4):
        dst = tmp_path / f"out{seed}"
        run_split(root, dst, val=0.2, test=0.2, seed=seed, groups="level:1")
        sites = split_of_group(dst)
        assert all(len(s) == 1 for s in sites.values())
        assert sites["site-0"] == sites["site-5"]


def test_too_few_groups_for_three_splits(tmp_path):
    root = site_photos(tmp_path / "photos", sites=2)
    with pytest.raises(MarineLifeError, match="only 2 groups .* for 3 splits"):
        run_split(root, tmp_path / "out", groups="level:1")
    assert run_split(root, tmp_path / "out2", val=0.3, test=0.0, groups="level:1")


def test_a_class_seen_at_one_site_goes_to_train_and_is_named(tmp_path, capsys):
    root = site_photos(tmp_path / "photos", sites=6)
    rng = np.random.default_rng(9)
    (root / "octopus/site-4").mkdir(parents=True)
    for i in range(4):
        noise_photo(rng, (48, 40)).save(root / f"octopus/site-4/o{i}.jpg", quality=90)
    for seed in range(3):
        dst = tmp_path / f"out{seed}"
        run_split(root, dst, val=0.2, test=0.2, seed=seed, groups="level:1")
        assert split_of_group(dst)["site-4"] == {"train"}  # the only site with octopuses
        assert "class 'octopus' has no photos in val/test" in capsys.readouterr().out
