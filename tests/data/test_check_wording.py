"""`check` says "1 class" and "Ignored 1 file", not "1 classes" and "1 files"."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

import marinelife as ml


def test_singular_counts(tmp_path: Path):
    folder = tmp_path / "photos" / "crab"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (40, 40), (i * 90, 30, 60)).save(folder / f"c{i}.png")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    text = str(ml.check(tmp_path / "photos"))
    assert "1 class," in text and "1 classes" not in text
    assert "Ignored 1 file (" in text
