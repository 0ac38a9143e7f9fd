"""Every Python code block of the docs runs, in order, so the pages cannot rot.

Blocks fenced as ```python run; ```python no-run is shown but skipped (it names the user's files).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return [code for info, code in BLOCK.findall(page.read_text("utf-8")) if "no-run" not in info]


def test_blocks_are_found():
    blocks = python_blocks(DOCS / "python-api.md")
    assert len(blocks) >= 6 and not any("dive.jpg" in b for b in blocks)


@pytest.mark.slow
def test_python_api_walkthrough_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__docs__"}
    for number, code in enumerate(python_blocks(DOCS / "python-api.md"), 1):
        try:
            exec(compile(code, f"docs/python-api.md block {number}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - name the block that broke
            raise AssertionError(f"docs/python-api.md block {number} failed: {exc!r}") from exc
    assert (tmp_path / "runs" / "lite0" / "export" / "model.onnx").is_file()
    assert (tmp_path / "comparison").is_dir()
