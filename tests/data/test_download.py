"""`marinelife download` with kagglehub replaced by a local folder: never the network."""

from __future__ import annotations

from pathlib import Path

import kagglehub
import pytest
from test_check import make_photo_dataset

from conftest import tree_digest
from marinelife.cli import main
from marinelife.data.download import KAGGLE_DATASET, find_class_root, run_download
from marinelife.data.scan import scan_dataset
from marinelife.errors import MarineLifeError


@pytest.fixture
def fake_download(tmp_path: Path, monkeypatch) -> tuple[Path, list[str]]:
    """A kagglehub cache folder nesting the class folders the way the Kaggle archive does."""
    version = tmp_path / "cache/datasets/vencerlanz09/sea-animals/versions/5"
    make_photo_dataset(version / "Sea Animals" / "Sea Animals", {"all": 8}, flat=True)
    calls: list[str] = []

    def dataset_download(handle: str, *args, **kwargs) -> str:
        calls.append(handle)
        return str(version)

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    return version, calls


def test_download_then_split(fake_download, tmp_path: Path, capsys) -> None:
    version, calls = fake_download
    before = tree_digest(version)
    dest = run_download(tmp_path / "data/sea-animals", seed=7)
    assert calls == [KAGGLE_DATASET]
    layout = scan_dataset(dest)
    assert layout.classes == ["crab", "eel", "fish"]
    assert sum(len(v) for v in layout.splits.values()) == 24
    assert (dest / "split.csv").is_file()
    assert "Split 24 images" in capsys.readouterr().out
    assert tree_digest(version) == before


def test_offline_is_one_clear_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def offline(handle: str, *args, **kwargs) -> str:
        raise ConnectionError("Max retries exceeded\nwith url: https://www.kaggle.com/api")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(MarineLifeError) as info:
        run_download(tmp_path / "dest", seed=1)
    message = str(info.value)
    assert message.startswith(f"could not download {KAGGLE_DATASET}: ConnectionError: Max retries")
    assert "KAGGLE_USERNAME/KAGGLE_KEY" in message and "marinelife split SRC DST" in message
    assert "\n" not in message
    assert main(["download", "--dest", str(tmp_path / "dest")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not download" in err[0]
    assert not (tmp_path / "dest").exists()


def test_non_empty_destination_is_refused_before_downloading(fake_download, tmp_path) -> None:
    _, calls = fake_download
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old.txt").write_text("keep")
    with pytest.raises(MarineLifeError, match="not empty"):
        run_download(dest, seed=1)
    assert calls == [] and (dest / "old.txt").read_text() == "keep"


def test_download_without_class_folders(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "versions/1"
    (empty / "docs").mkdir(parents=True)
    (empty / "docs/readme.txt").write_text("x")
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, **kw: str(empty))
    with pytest.raises(MarineLifeError, match="no class folders"):
        run_download(tmp_path / "dest", seed=1)


def test_find_class_root(tmp_path: Path) -> None:
    split_root = make_photo_dataset(tmp_path / "a/b/data", {"train": 1, "val": 1})
    assert find_class_root(tmp_path / "a") == split_root
    flat_root = make_photo_dataset(tmp_path / "c/images", {"all": 1}, flat=True)
    assert find_class_root(tmp_path / "c") == flat_root
