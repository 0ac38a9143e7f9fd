"""`marinelife check` and the hashing behind it, on generated photo-like images.

The project's synthetic shapes share one gradient background, so many of them are near-duplicates
at thumbnail scale by design; these tests use random colour-texture "photos" instead, which are
unrelated to each other, so a clean set must come out with no findings.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_check, tree_digest
from marinelife import fileio
from marinelife.cli import main
from marinelife.data import hashing
from marinelife.data.check import discover
from marinelife.errors import MarineLifeError

CLASSES = ("crab", "eel", "fish")


def noise_photo(rng: np.random.Generator, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth random colour field plus grain: structured like a photo, unlike any other one."""
    w, h = size
    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    arr = np.asarray(base.resize((w, h), Image.BICUBIC), dtype=np.float32)
    arr = arr + rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_photo_dataset(
    root: Path,
    counts: dict[str, int] | dict[str, dict[str, int]],
    *,
    classes: tuple[str, ...] = CLASSES,
    flat: bool = False,
    seed: int = 0,
) -> Path:
    """``root/SPLIT/CLASS/*.jpg`` (or ``root/CLASS/*.jpg`` with ``flat`` and counts {"all": n}).

    ``counts`` maps split -> images per class, or split -> {class: images}.
    """
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for name in classes:
            n = per_class[name] if isinstance(per_class, dict) else per_class
            folder = root / name if flat else root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise_photo(rng).save(folder / f"{name}_{split}_{i:03d}.jpg", quality=90)
    return root


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def corrupt_png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    noise_photo(rng).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 20
    data[start : start + 40] = bytes(40)
    return bytes(data)


def check_json(root: Path, capsys, min_size: int = 16) -> tuple[int, dict]:
    code = run_check(root, as_json=True, min_size=min_size)
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_photo_dataset(tmp_path / "photos", {"train": 6, "val": 2, "test": 2})


@pytest.fixture
def planted(photos: Path) -> Path:
    """The clean set plus one of every problem check must find."""
    rng = np.random.default_rng(99)
    original = photos / "train/crab/crab_train_000.jpg"
    (photos / "train/crab/corrupt.png").write_bytes(corrupt_png(rng))
    whole = jpeg_bytes(noise_photo(rng))
    (photos / "train/eel/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (photos / "train/eel/empty.jpg").write_bytes(b"")
    (photos / "train/fish/notes.jpg").write_text("not an image\n")
    noise_photo(rng, (12, 10)).save(photos / "train/fish/tiny.jpg")
    shutil.copyfile(original, photos / "test/crab/leaked_copy.jpg")
    img = Image.open(photos / "train/eel/eel_train_001.jpg")
    img.resize((40, 30), Image.LANCZOS).save(photos / "val/eel/eel_small.jpg", quality=85)
    img = Image.open(photos / "train/fish/fish_train_002.jpg")
    img.convert("L").save(photos / "test/fish/fish_grey.jpg", quality=90)
    img = Image.open(photos / "train/fish/fish_train_003.jpg")
    img.save(photos / "val/fish/fish_q30.jpg", quality=30)
    shutil.copyfile(photos / "train/crab/crab_train_004.jpg", photos / "train/eel/mislabelled.jpg")
    return photos


def test_clean_set_reports_nothing(photos: Path, capsys) -> None:
    before = tree_digest(photos)
    code, report = check_json(photos, capsys)
    assert code == 0
    assert report["ok"] is True
    assert report["problems"] == [] and report["duplicate_groups"] == []
    assert report["counts"]["train"] == {c: 6 for c in CLASSES}
    assert report["imbalance"] == {"train": 1.0, "val": 1.0, "test": 1.0}
    assert tree_digest(photos) == before


def test_every_planted_problem_is_found(planted: Path, capsys) -> None:
    before = tree_digest(planted)
    code, report = check_json(planted, capsys)
    assert code == 1 and report["ok"] is False
    kinds = {p["path"]: p["kind"] for p in report["problems"]}
    assert kinds == {
        "train/crab/corrupt.png": "corrupt",
        "train/eel/truncated.jpg": "truncated",
        "train/eel/empty.jpg": "zero-byte",
        "train/fish/notes.jpg": "non-image",
        "train/fish/tiny.jpg": "too-small",
    }
    groups = {frozenset(m["path"] for m in g["members"]): g for g in report["duplicate_groups"]}
    leak = groups[frozenset({"train/crab/crab_train_000.jpg", "test/crab/leaked_copy.jpg"})]
    assert leak["exact"] and leak["leakage"] and not leak["conflicting_labels"]
    assert leak["splits"] == ["train", "test"]
    for copy, source in [
        ("val/eel/eel_small.jpg", "train/eel/eel_train_001.jpg"),
        ("test/fish/fish_grey.jpg", "train/fish/fish_train_002.jpg"),
        ("val/fish/fish_q30.jpg", "train/fish/fish_train_003.jpg"),
    ]:
        near = groups[frozenset({copy, source})]
        assert near["leakage"] and not near["exact"]
    conflict = groups[frozenset({"train/crab/crab_train_004.jpg", "train/eel/mislabelled.jpg"})]
    assert conflict["conflicting_labels"] and not conflict["leakage"]
    assert conflict["classes"] == ["crab", "eel"]
    assert len(groups) == 5  # nothing unrelated was grouped
    assert report["summary"]["problems"] == 5 + 5
    assert tree_digest(planted) == before


def test_terminal_report_and_exit_codes(planted: Path, photos: Path, capsys) -> None:
    assert run_check(planted, as_json=False, min_size=16) == 1
    out = capsys.readouterr().out
    assert "LEAKAGE train+test" in out and "CONFLICTING LABELS crab / eel" in out
    assert "truncated" in out and "imbalance" in out
    assert main(["check", str(planted), "--min-size", "16"]) == 1


def test_json_shape(photos: Path, capsys) -> None:
    _, report = check_json(photos, capsys)
    assert set(report) >= {
        "root", "layout", "splits", "classes", "images", "readable", "counts", "imbalance",
        "problems", "duplicate_groups", "ignored_files", "summary", "ok",
    }  # fmt: skip
    assert report["layout"] == "split" and report["splits"] == ["train", "val", "test"]
    assert report["images"] == report["readable"] == 30


def test_flat_layout_and_imbalance(tmp_path: Path, capsys) -> None:
    counts = {"all": {"crab": 8, "eel": 4, "fish": 2}}
    root = make_photo_dataset(tmp_path / "flat", counts, flat=True)
    code, report = check_json(root, capsys)
    assert code == 0
    assert report["layout"] == "flat" and report["counts"]["all"] == counts["all"]
    assert report["imbalance"]["all"] == 4.0


def test_layout_problems_are_reported_not_raised(photos: Path, capsys) -> None:
    (photos / "train/octopus").mkdir()
    shutil.rmtree(photos / "val/eel")
    (photos / "train/readme.txt").write_text("hi")
    shutil.copyfile(photos / "val/fish/fish_val_000.jpg", photos / "train/loose.jpg")
    (photos / "test/fish/notes.txt").write_text("hi")
    code, report = check_json(photos, capsys)
    assert code == 1
    kinds = {(p["kind"], p["path"]) for p in report["problems"]}
    assert ("empty-class", "train/octopus") in kinds
    assert ("missing-class", "val/eel") in kinds
    assert report["ignored_files"] == [
        {"path": "train/loose.jpg", "reason": "image not inside a class folder"},
        {"path": "test/fish/notes.txt", "reason": "not an image file type"},
    ]


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no-images", "mixed"])
def test_bad_input_raises_user_error(tmp_path: Path, case: str, capsys) -> None:
    target = tmp_path / "data"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "no-images":
        (target / "crab").mkdir(parents=True)
        (target / "crab/notes.txt").write_text("x")
    elif case == "mixed":
        make_photo_dataset(target, {"train": 1})
        (target / "extra").mkdir()
    with pytest.raises(MarineLifeError) as info:
        run_check(target, as_json=False, min_size=16)
    assert str(target) in str(info.value) and "ROOT/" in str(info.value)
    assert main(["check", str(target)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_discover_pools_nested_images(photos: Path) -> None:
    (photos / "train/crab/sub").mkdir()
    shutil.copyfile(photos / "val/eel/eel_val_000.jpg", photos / "train/crab/sub/x.jpg")
    inv = discover(photos)
    assert len(inv.images) == 31 and not inv.layout_problems
    assert any(e.path.name == "x.jpg" and e.label == "crab" for e in inv.images)


def test_hashing_library_functions(planted: Path) -> None:
    path = planted / "train/crab/crab_train_000.jpg"
    assert fileio.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    paths = sorted(planted.rglob("*.*"))
    groups = hashing.find_duplicate_groups(paths, workers=1)
    assert len(groups) == 5
    for group in groups:
        assert [paths[i] for i in group.indices] == list(group.paths)
    assert sum(g.exact for g in groups) == 2
    ids = hashing.group_ids(paths)
    assert len(set(ids)) == len(paths) - sum(len(g.indices) - 1 for g in groups)
    for group in groups:
        assert len({ids[i] for i in group.indices}) == 1


def test_near_duplicates_need_both_tests() -> None:
    rng = np.random.default_rng(0)
    thumbs = rng.normal(size=(3, 256)).astype(np.float32)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    same_hash = np.array([5, 5, 5], dtype=np.uint64)
    assert len(hashing.near_duplicate_pairs(same_hash, thumbs)) == 0  # hash alone is not enough
    thumbs[1] = thumbs[0]
    far_hash = np.array([0, 2**64 - 1, 5], dtype=np.uint64)
    assert len(hashing.near_duplicate_pairs(far_hash, thumbs)) == 0  # nor thumbnails alone
    assert hashing.near_duplicate_pairs(same_hash, thumbs).tolist() == [[0, 1]]


def test_popcount_fallback_matches_numpy(monkeypatch) -> None:
    values = np.random.default_rng(0).integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2)
    expected = [bin(int(v)).count("1") for v in values]
    assert hashing._popcount(values).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert hashing._popcount(values).tolist() == expected
