"""`explain` arguments: the class is matched ignoring case; swapped MODEL and IMAGE are named."""

from __future__ import annotations

import pytest

from conftest import image_bytes
from marinelife.cli import main
from marinelife.errors import MarineLifeError
from marinelife.evaluate.explain import match_class, run_explain


def test_target_class_ignores_case():
    classes = ["Seahorse", "Sharks", "Sea Urchins"]
    assert match_class("seahorse", classes) == "Seahorse"
    assert match_class("SEA URCHINS", classes) == "Sea Urchins"
    with pytest.raises(MarineLifeError, match="unknown class 'octopus'") as info:
        match_class("octopus", classes)
    assert "Seahorse, Sharks, Sea Urchins" in str(info.value)


def test_swapped_arguments_are_named(tiny_bundle, tmp_path, capsys):
    photo = tmp_path / "good.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    with pytest.raises(MarineLifeError, match="look swapped") as info:
        run_explain(photo, tiny_bundle)
    assert f"marinelife explain {tiny_bundle} {photo}" in str(info.value)
    capsys.readouterr()
    assert main(["explain", str(photo), str(tiny_bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "look swapped" in err[0]
    with pytest.raises(MarineLifeError, match="is a folder"):
        run_explain(tiny_bundle, tmp_path)
