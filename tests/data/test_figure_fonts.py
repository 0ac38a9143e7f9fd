"""Class and file names in any script make figures without matplotlib's missing-glyph warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from marinelife.data import figures
from marinelife.evaluate import figures as efig


def test_cjk_names_draw_without_glyph_warnings(tmp_path: Path):
    names = ["珊瑚礁の魚", "Sea Urchins", "كائن بحري"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        efig.plot_confusion_matrix(np.eye(3, dtype=int) * 4, names, tmp_path / "cm.png")
        efig.plot_per_class_accuracy([1.0, 0.5, 0.25], [4, 4, 4], names, tmp_path / "acc.png")
        photo = tmp_path / "海の写真.png"
        Image.new("RGB", (40, 30), (20, 80, 160)).save(photo)
        efig.plot_image_gallery([(str(photo), f"{photo.name}\ntrue 珊瑚")], tmp_path / "g.png",
                                title="Misclassified 写真")  # fmt: skip
    glyphs = [str(w.message) for w in seen if "Glyph" in str(w.message)]
    assert glyphs == []
    for name in ("cm.png", "acc.png", "g.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert figures.font_family()[0]  # the default font leads; installed fallbacks follow
