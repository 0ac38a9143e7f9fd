"""Logging set-up shared by every command; progress bars follow the log level."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

LOGGER_NAME = "marinelife"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (it may be swapped, e.g. by test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


def setup_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """INFO by default, DEBUG with -v, WARNING with -q; idempotent across repeated CLI calls."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "_marinelife", False) for h in logger.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._marinelife = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def progress_enabled() -> bool:
    """Progress bars unless -q was given or MARINELIFE_QUIET=1 is set in the environment."""
    if os.environ.get("MARINELIFE_QUIET", "") not in ("", "0"):
        return False
    return logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO)


def _is_main_process() -> bool:
    """Rank 0 of a torch.distributed job, or a plain process (torch is not imported here)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return True


def progress(
    iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True
) -> Any:
    """A tqdm bar with ETA on stderr; off with -q, when not a terminal, or under DDP rank > 0."""
    from tqdm import tqdm

    disable = not enabled or not progress_enabled() or not _is_main_process()
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=disable, dynamic_ncols=True)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 class``, ``2 classes``, ``1,000 files``: a count with its noun in the right number
    (``many`` for irregular plurals; otherwise +es after s/x/ch/sh, else +s)."""
    if count == 1:
        return f"1 {noun}"
    if many is None:
        many = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{count:,} {many}"


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters 2, combining marks 0."""
    import unicodedata

    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded to ``width`` terminal columns (``ljust``/``rjust`` count characters, so
    a CJK file name would push the rest of its row out of line)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill
