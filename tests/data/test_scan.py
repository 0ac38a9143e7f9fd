"""scan_dataset: split and flat layouts, aliases, hidden files, class mapping, bad layouts."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from conftest import tree_digest
from marinelife.data.scan import (
    DatasetLayout,
    find_images,
    load_classes,
    save_classes,
    scan_dataset,
)
from marinelife.errors import MarineLifeError

_PIXEL = Image.new("RGB", (8, 8), (10, 100, 200))


def put(path: Path) -> Path:
    """A tiny real image (scan never decodes, but `check` and others may reuse these trees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), path.suffix.lstrip(".").upper()
    )
    _PIXEL.save(path, fmt)
    return path


def make_split(
    root: Path,
    layout: dict[str, dict[str, int]],
    ext: str = ".jpg",
) -> Path:
    """``{"train": {"cat": 2}, "val": {...}}`` → root/train/cat/0.jpg ..."""
    for split, classes in layout.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                put(folder / f"{i}{ext}")
    return root


THREE = {"a": 2, "b": 3, "c": 1}


def error_for(root: Path) -> str:
    with pytest.raises(MarineLifeError) as info:
        scan_dataset(root)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# split layouts


def test_synthetic_split_dataset(tiny_dataset: Path) -> None:
    layout = scan_dataset(tiny_dataset)
    assert isinstance(layout, DatasetLayout)
    assert not layout.flat
    assert layout.root == tiny_dataset
    assert len(layout.classes) == 4
    assert {k: len(v) for k, v in layout.splits.items()} == {"train": 48, "val": 16, "test": 16}
    assert layout.counts("train") == {c: 12 for c in layout.classes}
    layout.require_splits("train", "val", "test")


@pytest.mark.parametrize(
    ("train", "val", "test"),
    [
        ("train", "val", "test"),
        ("train", "valid", "test"),
        ("train", "validation", "test"),
        ("Train", "VAL", "Test"),
        ("TRAIN", "Validation", "TEST"),
    ],
)
def test_split_folder_aliases_and_case(tmp_path: Path, train: str, val: str, test: str) -> None:
    root = make_split(tmp_path / "d", {train: THREE, val: THREE, test: THREE})
    layout = scan_dataset(root)
    assert sorted(layout.splits) == ["test", "train", "val"]
    assert [s.path.parent.parent.name for s in layout.samples("val")] == [val] * 6
    assert layout.counts("test") == THREE


def test_train_only_split_is_allowed_but_missing_splits_are_reported(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE})
    layout = scan_dataset(root)
    layout.require_splits("train")
    with pytest.raises(MarineLifeError, match="'val'") as info:
        layout.require_splits("train", "val")
    assert str(root) in str(info.value)


def test_split_without_train_folder(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"val": THREE, "test": THREE})
    message = error_for(root)
    assert str(root) in message and "train" in message


def test_sorted_class_list_and_targets_through_train_classes(tmp_path: Path) -> None:
    counts = {"zebra": 1, "Angel": 2, "manta": 3, "Jelly Fish": 1, "Méduse": 2, "海月": 1}
    root = make_split(tmp_path / "d", {"train": counts, "val": counts, "test": counts})
    layout = scan_dataset(root)
    assert layout.classes == sorted(counts)
    assert layout.class_to_index == {name: i for i, name in enumerate(sorted(counts))}
    for split in ("train", "val", "test"):
        targets = layout.targets(split)
        labels = [s.label for s in layout.samples(split)]
        assert targets == [layout.classes.index(label) for label in labels]
        assert layout.counts(split) == counts
        for sample in layout.samples(split):
            assert sample.path.parent.name == sample.label
            assert sample.path.is_file()


def test_val_targets_do_not_shift_when_val_has_fewer_images(tmp_path: Path) -> None:
    root = make_split(
        tmp_path / "d",
        {"train": {"a": 3, "b": 3, "c": 3}, "val": {"a": 1, "b": 2, "c": 1}},
    )
    layout = scan_dataset(root)
    assert layout.targets("val") == [0, 1, 1, 2]


def test_extensions_in_any_case(tmp_path: Path) -> None:
    root = tmp_path / "d"
    names = ["x.JPG", "x.jpeg", "x.Png", "x.tiff", "x.TIF", "x.webp", "x.gif", "x.bmp"]
    for name in names:
        put(root / "train" / "cls" / name)
    (root / "train" / "cls" / "notes.txt").write_text("not an image")
    (root / "train" / "cls" / "x.dng").write_bytes(b"not supported")
    layout = scan_dataset(root)
    assert sorted(s.path.name for s in layout.samples("train")) == sorted(names)


def test_hidden_files_and_folders_ignored(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    put(root / "train" / "a" / "._0.jpg")  # macOS resource fork twin
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    put(root / "train" / "a" / ".ipynb_checkpoints" / "0-checkpoint.jpg")
    put(root / "train" / ".ipynb_checkpoints" / "x.jpg")  # would otherwise be a class
    put(root / "train" / "__MACOSX" / "a" / "0.jpg")
    put(root / "__MACOSX" / "train" / "a" / "0.jpg")  # would otherwise be a non-split folder
    (root / ".git" / "objects").mkdir(parents=True)
    put(root / ".git" / "x.jpg")
    put(root / "val" / ".hidden" / "y.jpg")

    layout = scan_dataset(root)
    assert layout.classes == ["a", "b"]
    assert layout.counts("train") == {"a": 2, "b": 2}
    assert layout.counts("val") == {"a": 1, "b": 1}
    names = {s.path.name for _, s in layout.all_samples()}
    assert names == {"0.jpg", "1.jpg"}


def test_images_in_nested_subfolders_of_a_class_are_found(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": {"a": 1, "b": 1}})
    put(root / "train" / "a" / "2024 dive" / "deep.jpg")
    layout = scan_dataset(root)
    assert layout.counts("train") == {"a": 2, "b": 1}
    assert all(s.label == "a" for s in layout.samples("train") if "dive" in str(s.path))


def test_files_next_to_split_folders_are_ignored(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "val": THREE})
    (root / "README.txt").write_text("dataset card")
    put(root / "cover.jpg")
    assert scan_dataset(root).counts("train") == THREE


def test_find_images_sorted(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.png", "C.JPG", "sub/z.jpg"]:
        put(tmp_path / name)
    found = find_images(tmp_path)
    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "C.JPG",
        "a.png",
        "b.jpg",
        "sub/z.jpg",
    ]


def test_scan_never_modifies_the_tree(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "val": THREE, "test": THREE})
    (root / ".DS_Store").write_bytes(b"x")
    before = tree_digest(root)
    scan_dataset(root)
    scan_dataset(str(root))
    assert tree_digest(root) == before


# ---------------------------------------------------------------------------------------------
# class mismatches between splits


def test_class_missing_from_val_is_named(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "val": {"a": 1, "c": 1}})
    message = error_for(root)
    assert "'b'" in message and "val" in message
    assert str(root / "val" / "b") in message


def test_class_folder_empty_in_test_is_named(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "test": {"a": 1, "b": 1, "c": 0}})
    message = error_for(root)
    assert "'c'" in message and "test" in message


def test_class_names_match_across_unicode_normalisation(tmp_path: Path) -> None:
    # A val folder unzipped from macOS often spells "Méduse" decomposed (NFD).
    nfc, nfd = unicodedata.normalize("NFC", "Méduse"), unicodedata.normalize("NFD", "Méduse")
    assert nfc != nfd
    root = make_split(tmp_path / "d", {"train": {nfc: 2, "crab": 1}, "val": {nfd: 1, "crab": 1}})
    layout = scan_dataset(root)
    assert layout.classes == [nfc, "crab"]  # codepoint order: "M" < "c"
    assert layout.targets("val") == [0, 1]
    assert {s.label for s in layout.samples("val")} == {"crab", nfc}


def test_two_folders_for_one_class_after_normalisation(tmp_path: Path) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "Méduse"), unicodedata.normalize("NFD", "Méduse")
    root = make_split(tmp_path / "d", {"train": {nfc: 1, nfd: 1}})
    message = error_for(root)
    assert str(root / "train") in message and nfc in message


def test_class_in_test_unknown_to_train_is_named(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "test": {**THREE, "Octopus": 1}})
    message = error_for(root)
    assert "'Octopus'" in message
    assert str(root / "test" / "Octopus") in message


def test_empty_class_folder_in_train_is_named(tmp_path: Path) -> None:
    # timm's ImageFolder silently drops it and every later class index shifts by one.
    root = make_split(tmp_path / "d", {"train": {"a": 1, "b": 0, "c": 1}, "val": THREE})
    (root / "train" / "b" / ".DS_Store").write_bytes(b"x")
    (root / "train" / "b" / "readme.txt").write_text("only text")
    message = error_for(root)
    assert "'b'" in message
    assert str(root / "train" / "b") in message


def test_train_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    put(root / "train" / "loose.jpg")
    (root / "val").mkdir()
    message = error_for(root)
    assert str(root / "train") in message


# ---------------------------------------------------------------------------------------------
# flat layout


def test_flat_layout(flat_dataset: Path) -> None:
    layout = scan_dataset(flat_dataset)
    assert layout.flat
    assert list(layout.splits) == ["all"]
    assert len(layout.classes) == 3
    assert layout.counts("all") == {c: 20 for c in layout.classes}
    with pytest.raises(MarineLifeError) as info:
        layout.require_splits()
    message = str(info.value)
    assert "marinelife split" in message
    assert str(flat_dataset) in message


def test_flat_layout_unicode_classes_sorted(tmp_path: Path) -> None:
    names = ["海月", "Méduse", "Jelly Fish", "crab"]
    for name in names:
        put(tmp_path / "flat" / name / "x.JPG")
    layout = scan_dataset(tmp_path / "flat")
    assert layout.flat
    assert layout.classes == sorted(names)
    assert layout.targets("all") == list(range(4))


def test_flat_layout_with_folder_named_like_a_split_prefix(tmp_path: Path) -> None:
    # "trainer fish" and "value" are classes, not split folders.
    for name in ["trainer fish", "value", "tests"]:
        put(tmp_path / "flat" / name / "x.jpg")
    layout = scan_dataset(tmp_path / "flat")
    assert layout.flat
    assert layout.classes == ["tests", "trainer fish", "value"]


# ---------------------------------------------------------------------------------------------
# bad roots: always MarineLifeError naming the path


def test_missing_path(tmp_path: Path) -> None:
    root = tmp_path / "no-such-folder"
    message = error_for(root)
    assert str(root) in message and "does not exist" in message


def test_missing_path_as_string(tmp_path: Path) -> None:
    assert str(tmp_path / "x") in error_for(tmp_path / "x")
    with pytest.raises(MarineLifeError):
        scan_dataset(str(tmp_path / "x"))


def test_file_instead_of_folder(tmp_path: Path) -> None:
    path = put(tmp_path / "one.jpg")
    message = error_for(path)
    assert str(path) in message and "file" in message


def test_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert str(root) in error_for(root)


def test_folder_with_only_hidden_entries_is_empty(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / ".git").mkdir(parents=True)
    (root / ".DS_Store").write_bytes(b"x")
    assert "empty" in error_for(root)


def test_folder_with_no_images(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("no photos here")
    (root / "empty class").mkdir()
    message = error_for(root)
    assert str(root) in message and "no images" in message


def test_loose_images_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    put(root / "a.jpg")
    put(root / "b.jpg")
    assert str(root) in error_for(root)


def test_mixed_split_and_non_split_folders(tmp_path: Path) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, "val": THREE, "extra": THREE})
    message = error_for(root)
    assert str(root) in message and "extra" in message


@pytest.mark.parametrize(
    ("one", "two"), [("val", "valid"), ("valid", "validation"), ("Test", "test")]
)
def test_two_folders_for_one_split(tmp_path: Path, one: str, two: str) -> None:
    root = make_split(tmp_path / "d", {"train": THREE, one: THREE, two: THREE})
    message = error_for(root)
    assert str(root) in message
    assert one in message and two in message


def test_home_directory_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    make_split(tmp_path / "d", {"train": THREE})
    assert scan_dataset("~/d").root == tmp_path / "d"


# ---------------------------------------------------------------------------------------------
# class list files


def test_save_load_classes_round_trip_unicode(tmp_path: Path) -> None:
    classes = ["Jelly Fish", "Méduse", "海月", 'quote " and \\ backslash', "🐙"]
    path = tmp_path / "classes.json"
    save_classes(classes, path)
    assert load_classes(path) == classes
    assert "海月" in path.read_text(encoding="utf-8"), "saved as readable UTF-8, not \\u escapes"


@pytest.mark.parametrize("content", ["", "not json", '{"a": 1}', "[1, 2]", '["a", null]'])
def test_load_classes_rejects_bad_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "classes.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MarineLifeError) as info:
        load_classes(path)
    assert str(path) in str(info.value)


def test_load_classes_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "classes.json"
    with pytest.raises(MarineLifeError) as info:
        load_classes(path)
    assert str(path) in str(info.value)


def test_folder_of_heic_photos_is_found(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif")
    from marinelife.data.image_io import heif_available, load_image

    assert heif_available()
    names = ["IMG_0001.HEIC", "IMG_0002.heic", "DSC0003.HIF", "x.heif"]
    for name in names:
        (tmp_path / "iphone").mkdir(exist_ok=True)
        _PIXEL.save(tmp_path / "iphone" / name, "HEIF")
    found = find_images(tmp_path / "iphone")
    assert sorted(p.name for p in found) == sorted(names)
    assert all(load_image(p).size == (8, 8) for p in found)


def test_skipped_extensions_are_named_once_per_scan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_split(tmp_path / "d", {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}})
    (root / "train" / "a" / "DSC1.dng").write_bytes(b"raw")
    (root / "train" / "b" / "DSC2.DNG").write_bytes(b"raw")
    (root / "val" / "a" / "clip.mov").write_bytes(b"video")
    (root / "val" / "a" / "notes.txt").write_text("dive log")  # companion file: not named
    (root / "val" / "b" / ".DS_Store").write_bytes(b"\0")  # hidden: not named
    with caplog.at_level(logging.WARNING, logger="marinelife.data.scan"):
        layout = scan_dataset(root)
    assert layout.counts("train") == {"a": 1, "b": 1}
    messages = [r.getMessage() for r in caplog.records if r.name == "marinelife.data.scan"]
    assert messages == [f"{root}: skipped 3 files with unsupported extensions: .dng (2), .mov (1)"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="marinelife.data.scan"):
        assert len(find_images(root / "val")) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{root / 'val'}: skipped 1 file with unsupported extensions: .mov (1)"
    ]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="marinelife.data.scan"):
        assert len(find_images(root / "val" / "b")) == 1  # only a hidden file besides
    assert not caplog.records


def test_scan_failure_still_names_the_skipped_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "d"
    (root / "cls").mkdir(parents=True)
    (root / "cls" / "a.psd").write_bytes(b"8BPS")
    with caplog.at_level(logging.WARNING, logger="marinelife.data.scan"):
        assert "no images" in error_for(root)
    assert any(".psd (1)" in r.getMessage() for r in caplog.records)
