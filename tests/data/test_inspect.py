"""`inspect`: summary table, every figure written outside the dataset, the dataset untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tree_digest
from marinelife.data.inspect import default_out_dir, read_image_size, run_inspect
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError

SPLIT_FIGURES = {
    "class_distribution.png",
    "split_distribution.png",
    "split_volumes.png",
    "sample_grid.png",
    "image_sizes.png",
}


def _assert_pngs(folder: Path, names: set[str]) -> None:
    assert {p.name for p in folder.glob("*.png")} == names
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100


def _small_recipe(tmp_path: Path) -> str:
    path = tmp_path / "small.yaml"
    path.write_text("architecture: resnet18\ninput_size: 48\n", encoding="utf-8")
    return str(path)


def test_split_dataset_figures_and_table(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    before = tree_digest(tiny_dataset)
    out = run_inspect(tiny_dataset, out=tmp_path / "figs", augmented=False, recipe="two-stage")
    assert out == tmp_path / "figs"
    _assert_pngs(out, SPLIT_FIGURES)
    assert tree_digest(tiny_dataset) == before
    printed = capsys.readouterr().out
    rows = {line.split()[1]: line.split()[2:] for line in printed.splitlines()
            if line.startswith("synthetic ")}  # fmt: skip
    assert rows["disc"] == ["12", "4", "4", "20"]
    assert any(line.split() == ["total", "48", "16", "16", "80"] for line in printed.splitlines())


@pytest.mark.slow  # importing timm alone takes seconds on a busy machine
def test_augmented_samples_use_the_recipe(tiny_dataset: Path, tmp_path: Path) -> None:
    before = tree_digest(tiny_dataset)
    out = run_inspect(
        tiny_dataset, out=tmp_path / "figs", augmented=True, recipe=_small_recipe(tmp_path)
    )
    assert (out / "augmented_samples.png").stat().st_size > 1000
    assert tree_digest(tiny_dataset) == before


def test_flat_dataset_and_default_out_dir(flat_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default is under the current folder, not beside the data
    parent_before = sorted(p.name for p in flat_dataset.parent.iterdir())
    before = tree_digest(flat_dataset)
    out = run_inspect(flat_dataset, out=None, augmented=False, recipe="two-stage")
    assert out == default_out_dir(flat_dataset) == Path("inspect") / "flat"
    assert out.resolve() == work / "inspect" / "flat"
    _assert_pngs(out, SPLIT_FIGURES - {"split_distribution.png"})
    assert tree_digest(flat_dataset) == before
    assert sorted(p.name for p in flat_dataset.parent.iterdir()) == parent_before
    # Another dataset of the same name keeps the first one's figures and gets its own folder.
    twin = make_synthetic_dataset(tmp_path / "elsewhere" / "flat", num_classes=2,
                                  counts={"all": 4}, size=32, flat=True)  # fmt: skip
    first = (out / "class_distribution.png").read_bytes()
    other = run_inspect(twin, out=None, augmented=False, recipe="two-stage")
    assert other != out and other.name.startswith("flat-")
    assert (out / "class_distribution.png").read_bytes() == first
    assert run_inspect(flat_dataset, out=None, augmented=False, recipe="two-stage") == out


@pytest.mark.parametrize("inside", [".", "figures", "train/figures"])
def test_out_inside_data_is_refused(tiny_dataset: Path, inside: str) -> None:
    before = tree_digest(tiny_dataset)
    with pytest.raises(MarineLifeError, match="inside the dataset"):
        run_inspect(tiny_dataset, out=tiny_dataset / inside, augmented=False, recipe="two-stage")
    assert tree_digest(tiny_dataset) == before


def test_unknown_recipe_fails_before_writing(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(MarineLifeError, match="recipe"):
        run_inspect(tiny_dataset, out=tmp_path / "figs", augmented=True, recipe="two-stag")
    assert not (tmp_path / "figs").exists()


def test_read_image_size_uses_header_and_exif(tmp_path: Path) -> None:
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: displayed as 20 wide, 40 high
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image_size(tmp_path / "rotated.jpg") == (20, 40)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert read_image_size(tmp_path / "broken.jpg") is None
