"""CLI bad input: every command answers a bad path with exit 2 and one stderr line naming it.

Commands whose module has not landed yet are skipped through ``pytest.importorskip`` and turn on by
themselves once it exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from marinelife import __version__
from marinelife.cli import build_parser, main
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError

BAD_KINDS = ("missing", "file", "empty", "no_images")


def subprocess_env() -> dict[str, str]:
    # `-q` in an earlier in-process call leaves MARINELIFE_QUIET set; a real user has no such thing.
    env = {k: v for k, v in os.environ.items() if k != "MARINELIFE_QUIET"}
    return {**env, "PYTHONUTF8": "1"}


def make_bad(tmp_path: Path, kind: str) -> Path:
    """A dataset argument that is wrong in one way; the name has a space and non-ASCII."""
    path = tmp_path / f"my photos é {kind}"
    if kind == "file":
        Image.new("RGB", (8, 8)).save(path.with_suffix(".jpg"))
        return path.with_suffix(".jpg")
    if kind == "empty":
        path.mkdir()
        (path / ".DS_Store").write_bytes(b"\0")  # hidden files do not count
    elif kind == "no_images":
        (path / "crab").mkdir(parents=True)
        (path / "crab" / "notes.txt").write_text("no photos yet")
        (path / "README.md").write_text("dataset card")
    return path


def assert_one_line_error(capsys: pytest.CaptureFixture[str], command: str, path: Path) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith(f"marinelife {command}: error: "), lines[0]
    assert str(path) in lines[0], f"the message should name {path}: {lines[0]}"
    return lines[0]


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if action.dest == "command":
            return set(action.choices)
    raise AssertionError("no subcommands")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(
        tmp_path / "good data", num_classes=2, counts={"train": 4, "val": 2, "test": 2}, size=32
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny real run (random init, a 32 px test network, one epoch) for evaluate/predict."""
    pytest.importorskip("marinelife.pipeline.training")
    root = tmp_path_factory.mktemp("cli-run")
    data = make_synthetic_dataset(
        root / "data", num_classes=2, counts={"train": 4, "val": 2, "test": 2}, size=32
    )
    sets = [
        "architecture=test_efficientnet",
        "head=linear",
        "epochs=1",
        "finetune_epochs=0",
        "input_size=32",
        "batch_size=4",
        "workers=0",
        "feature_cache=false",
    ]
    args = ["train", "--data", str(data), "--runs-dir", str(root / "runs"), "--name", "r"]
    args += ["--no-pretrained", "-q", *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 0
    return root / "runs" / "r"


# ---------------------------------------------------------------------------------------------
# bad dataset paths, command by command

# command → (module that implements it, argv builder from (bad path, tmp_path))
Argv = Callable[[Path, Path], list[str]]
DATA_COMMANDS: dict[str, tuple[str, Argv]] = {
    "check": ("marinelife.data.check", lambda p, t: ["check", str(p)]),
    "split": ("marinelife.data.split", lambda p, t: ["split", str(p), str(t / "split-out")]),
    "inspect": ("marinelife.data.inspect", lambda p, t: ["inspect", str(p), "--out", str(t / "i")]),
    "train": (
        "marinelife.pipeline.training",
        lambda p, t: [
            "train",
            "--data",
            str(p),
            "--runs-dir",
            str(t / "runs"),
            "--name",
            "r",
            "--no-pretrained",
            "--set",
            "epochs=1",
        ],  # fmt: skip
    ),
}


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", list(DATA_COMMANDS))
def test_bad_data_path_exits_2_with_one_line(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module, argv = DATA_COMMANDS[command]
    pytest.importorskip(module)
    bad = make_bad(tmp_path, kind)
    capsys.readouterr()
    assert main(argv(bad, tmp_path)) == 2
    assert_one_line_error(capsys, command, bad)


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", list(DATA_COMMANDS))
def test_bad_data_path_with_debug_raises(command: str, kind: str, tmp_path: Path) -> None:
    module, argv = DATA_COMMANDS[command]
    pytest.importorskip(module)
    bad = make_bad(tmp_path, kind)
    with pytest.raises(MarineLifeError) as info:
        main([*argv(bad, tmp_path), "--debug"])
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", ["split", "inspect"])
def test_bad_data_path_leaves_no_output_behind(command: str, kind: str, tmp_path: Path) -> None:
    module, argv = DATA_COMMANDS[command]
    pytest.importorskip(module)
    bad = make_bad(tmp_path, kind)
    before = set(tmp_path.rglob("*"))
    assert main(argv(bad, tmp_path)) == 2
    assert set(tmp_path.rglob("*")) == before


def test_train_bad_data_leaves_no_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("marinelife.pipeline.training")
    _, argv = DATA_COMMANDS["train"]
    assert main(argv(make_bad(tmp_path, "missing"), tmp_path)) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_train_on_flat_folder_says_to_split(
    tmp_path: Path, flat_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module, argv = DATA_COMMANDS["train"]
    pytest.importorskip(module)
    capsys.readouterr()
    assert main(argv(flat_dataset, tmp_path)) == 2
    assert "marinelife split" in assert_one_line_error(capsys, "train", flat_dataset)


def test_split_into_existing_non_empty_destination(
    tmp_path: Path, flat_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("marinelife.data.split")
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("user file")
    capsys.readouterr()
    assert main(["split", str(flat_dataset), str(dst)]) == 2
    assert_one_line_error(capsys, "split", dst)
    assert (dst / "keep.txt").read_text() == "user file"


# ---------------------------------------------------------------------------------------------
# evaluate: bad run folder, bad data folder


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_evaluate_bad_run_folder(
    kind: str, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("marinelife.evaluate.evaluate_split")
    bad = make_bad(tmp_path, kind)
    capsys.readouterr()
    assert main(["evaluate", str(bad), "--data", str(dataset)]) == 2
    assert_one_line_error(capsys, "evaluate", bad)
    with pytest.raises(MarineLifeError):
        main(["evaluate", str(bad), "--data", str(dataset), "--debug"])


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_evaluate_bad_data_folder(
    kind: str, tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("marinelife.evaluate.evaluate_split")
    bad = make_bad(tmp_path, kind)
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(bad)]) == 2
    assert_one_line_error(capsys, "evaluate", bad)
    with pytest.raises(MarineLifeError) as info:
        main(["evaluate", str(trained_run), "--data", str(bad), "--debug"])
    assert str(bad) in str(info.value)


def test_evaluate_flat_folder(
    trained_run: Path, flat_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(flat_dataset)]) == 2
    assert_one_line_error(capsys, "evaluate", flat_dataset)


def test_evaluate_missing_split(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_synthetic_dataset(
        tmp_path / "no test", num_classes=2, counts={"train": 2, "val": 2}, size=32
    )
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(data)]) == 2
    assert "'test'" in assert_one_line_error(capsys, "evaluate", data)


# ---------------------------------------------------------------------------------------------
# predict (only once the command exists)


def _predict_positionals() -> list[str]:
    if "predict" not in subcommands():
        pytest.skip("no predict command yet")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    return [a.dest for a in sub._actions if not a.option_strings]


@pytest.mark.parametrize("kind", ["missing", "empty", "no_images"])
def test_predict_bad_images_path(
    kind: str, tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if len(_predict_positionals()) != 2:
        pytest.skip("predict takes other arguments than MODEL IMAGES")
    bad = make_bad(tmp_path, kind)
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(bad)]) == 2
    assert_one_line_error(capsys, "predict", bad)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_predict_bad_model_path(
    kind: str, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if len(_predict_positionals()) != 2:
        pytest.skip("predict takes other arguments than MODEL IMAGES")
    bad = make_bad(tmp_path, kind)
    image = next((dataset / "test").rglob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(bad), str(image)]) == 2
    assert_one_line_error(capsys, "predict", bad)


# ---------------------------------------------------------------------------------------------
# config mistakes through the CLI


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "epoch=1"], "did you mean 'epochs'"),
        (["--set", "epochs=abc"], "epochs"),
        (["--set", "head=cnn"], "head"),
        (["--recipe", "no-such-recipe"], "no-such-recipe"),
    ],
)
def test_train_config_mistakes(
    extra: list[str],
    needle: str,
    tmp_path: Path,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("marinelife.pipeline.training")
    capsys.readouterr()
    args = ["train", "--data", str(dataset), "--runs-dir", str(tmp_path / "runs"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert needle in err


# ---------------------------------------------------------------------------------------------
# version and help


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"marinelife {__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "marinelife", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: marinelife")
    for command in ("check", "split", "train", "evaluate", "recipes"):
        assert command in result.stdout


def test_python_dash_m_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "marinelife", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"marinelife {__version__}"


@pytest.mark.slow  # a fresh interpreter importing torch: ~8 s on a busy 2-core machine
def test_real_process_prints_exactly_one_stderr_line(tmp_path: Path) -> None:
    # In a real process logging is configured (under pytest it is not), so INFO lines logged
    # before the error would break the one-line contract.
    pytest.importorskip("marinelife.pipeline.training")
    bad = tmp_path / "missing data"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "marinelife",
            "train",
            "--data",
            str(bad),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and "Traceback" not in result.stderr
