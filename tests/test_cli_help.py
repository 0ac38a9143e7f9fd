"""`--help` for every verb: a purpose, an example, help for every option and its default; the
recipe listing wraps at words; a closed pipe (`| head`) ends quietly, without a traceback."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from marinelife.cli import build_parser
from marinelife.cli.help import recipe_lines


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # no public accessor
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_top_level_help_is_for_users():
    text = build_parser().format_help()
    assert "Thin command line" not in text and "parse arguments" not in text
    assert "marine-life photos" in text and "marinelife COMMAND --help" in text


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_verb_has_purpose_example_and_option_help(verb):
    parser = verbs()[verb]
    assert parser.description and parser.description.strip().endswith(".")
    assert parser.epilog and f"marinelife {verb}" in parser.epilog
    formatter = parser._get_formatter()
    missing, no_default = [], []
    for action in options(parser):
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(name)
            continue
        shown = formatter._get_help_string(action) % {**vars(action), "prog": parser.prog}
        meaningful = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and meaningful and "default" not in shown.lower():
            no_default.append(name)
    assert not missing, f"{verb}: options without help: {missing}"
    assert not no_default, f"{verb}: defaults not shown: {no_default}"
    parser.format_help()  # every help string formats (a stray % would raise here)


def test_defaults_appear_in_the_help_text():
    def text(verb: str) -> str:
        return " ".join(verbs()[verb].format_help().split())  # the help wraps anywhere

    assert "(default: 8000)" in text("serve") and "(default: 127.0.0.1)" in text("serve")
    assert "MARINELIFE_API_KEY" in text("serve")
    assert "(default: 17)" in text("export")
    assert "(default: 5)" in text("cv")


def test_inspect_shows_the_recipe_train_uses():
    def default(verb: str, dest: str):
        return next(a.default for a in verbs()[verb]._actions if a.dest == dest)

    assert default("inspect", "recipe") == default("train", "recipe") == "two-stage-lite"


def test_recipe_listing_wraps_at_words(monkeypatch):
    size = os.terminal_size((72, 24))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: size)
    long = "word " * 30 + "supercalifragilistic-expialidocious end."
    lines = recipe_lines({"r": {"architecture": "net", "description": long.strip()}})
    assert len(lines) > 2 and all(len(line) <= 72 for line in lines[:-2])
    words = " ".join(line[42:] for line in lines).split()
    assert words == long.split()  # nothing cut or lost, the long word kept whole


def _pipe(command: str) -> subprocess.CompletedProcess:
    """``command`` in bash with pipefail; the last line of stdout is the CLI's exit status."""
    return subprocess.run(
        ["bash", "-c", f'{command}; echo "status=${{PIPESTATUS[0]}}" >&2'],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None,
                    reason="needs bash and head")  # fmt: skip
def test_closed_pipe_ends_without_a_traceback():
    cli = f"{sys.executable} -m marinelife recipes two-stage-lite"
    result = _pipe(f"{cli} | head -1")
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    # A reader that leaves before anything is written: the write itself hits the closed pipe.
    result = _pipe(f"{cli} | head -c 0")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] in ("status=0", "status=141")
