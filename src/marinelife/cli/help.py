"""How `marinelife --help` reads: the top-level description, each verb's purpose and examples,
and every option's default. Kept apart from cli.py so the parser there stays a list of options."""

from __future__ import annotations

import argparse
import shutil
import textwrap

DESCRIPTION = """\
marinelife turns a folder of marine-life photos into a trained, evaluated, deployable image
classifier: checked data, leak-free splits, reproducible recipes, honest test metrics."""
EPILOG = """\
a typical session:
  marinelife check PHOTOS                       # corrupt files, imbalance, duplicates, leakage
  marinelife split PHOTOS DATA                  # PHOTOS/CLASS/*.jpg -> DATA/{train,val,test}/
  marinelife train --data DATA --name lite0     # recipe two-stage-lite, results in runs/lite0/
  marinelife report runs/lite0                  # runs/lite0/report.html
  marinelife predict runs/lite0 dive.jpg        # label a photo
  marinelife serve runs/lite0                   # upload page on http://127.0.0.1:8000

`marinelife COMMAND --help` describes a command, its options and their defaults."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (line breaks kept); every option's default shown,
    unless its help already says it or there is none to show (a flag that is off, an unset
    value whose help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def width() -> int:
    """Text width for help and listings: the terminal's, within reason (pipes get 100)."""
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))


def add_verb(
    sub: argparse._SubParsersAction, name: str, purpose: str, *examples: str, about: str = ""
) -> argparse.ArgumentParser:
    """A subcommand with its one-line purpose, optional detail and examples in ``--help``."""
    label = "example" if len(examples) == 1 else "examples"
    epilog = f"{label}:\n" + "\n".join(f"  {e}" for e in examples)
    description = purpose[0].upper() + purpose[1:] + "."
    if about:  # the raw formatter keeps line breaks, so wrap here (at words, never mid-word)
        description += "\n\n" + textwrap.fill(about, width() - 2, break_long_words=False,
                                              break_on_hyphens=False)  # fmt: skip
    return sub.add_parser(name, help=purpose, description=description, epilog=epilog,
                          formatter_class=HelpFormatter)  # fmt: skip


def recipe_lines(recipes: dict[str, dict[str, str]]) -> list[str]:
    """`marinelife recipes`: name, architecture, and the description wrapped at words under
    its own column (a description is never cut mid-word)."""
    indent = " " * (16 + 1 + 24 + 1)
    lines = []
    for recipe, about in recipes.items():
        lead = f"{recipe:16s} {about['architecture']:24s} "
        wrapped = textwrap.wrap(about["description"], width=width(), initial_indent=lead,
                                subsequent_indent=indent, break_long_words=False,
                                break_on_hyphens=False)  # fmt: skip
        lines += wrapped or [lead.rstrip()]
    return lines
