"""The layer rule of docs/architecture.md, enforced on the imports of src/ (also inside functions).

Low to high: base (errors, logutil, fileio, _version) → config → core (data, models) → stages
(fit, evaluate, infer: none imports another) → top (pipeline, api, the package) → face (cli).
A module may import its own package and anything lower; no circles anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
RANK = {"base": 0, "config": 1, "core": 2, "stages": 3, "top": 4, "face": 5}
LAYER_OF = {
    "errors": "base", "logutil": "base", "fileio": "base", "_version": "base",
    "config": "config", "data": "core", "models": "core",
    "fit": "stages", "evaluate": "stages", "infer": "stages",
    "cli": "face", "__main__": "face",
}  # fmt: skip


def layer(module: str) -> tuple[str, str]:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    return LAYER_OF.get(head, "top"), head


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "marinelife").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("marinelife") and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_import_points_down(graph):
    upward = []
    for module, deps in graph.items():
        (low, head) = layer(module)
        for dep in deps:
            dep_low, dep_head = layer(dep)
            if dep_head == head and dep_low == low:
                continue  # inside one package
            if dep == "marinelife" and low == "face":
                continue  # the CLI calls the public API
            if RANK[dep_low] > RANK[low] or (RANK[dep_low] == RANK[low] and low == "stages"):
                upward.append(f"{module} ({low}) imports {dep} ({dep_low})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circles(graph):
    import graphlib

    try:
        graphlib.TopologicalSorter(graph).static_order()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_the_walker_sees_imports_inside_functions(tmp_path):
    """A lazy upward import is still an upward import."""
    package = tmp_path / "marinelife"
    (package / "data").mkdir(parents=True)
    (package / "data" / "x.py").write_text("def f():\n    from marinelife.fit import y\n")
    known = {"marinelife.data.x", "marinelife.fit.y", "marinelife.fit"}
    assert "marinelife.fit.y" in imports_of("marinelife.data.x", package / "data" / "x.py", known)


def test_import_marinelife_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, marinelife; print('torch' in sys.modules, marinelife.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
