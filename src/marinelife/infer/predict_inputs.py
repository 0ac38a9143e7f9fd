"""What `marinelife predict` was given, as a stream: files, folders (recursive) and globs.

Every input becomes :class:`Input` items in the order given (folders and globs sorted), photos
and videos alike, and an input that names nothing becomes a *problem* item in its place, so the
output can keep one row per input. Nothing is listed up front: a survey tree of 100k+ photos is
walked one folder at a time (:func:`marinelife.data.scan.iter_files`).
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from marinelife.data.image_io import is_image_path
from marinelife.data.scan import iter_files
from marinelife.errors import MarineLifeError
from marinelife.infer.video_io import is_video_path

IMAGE, VIDEO, PROBLEM = "image", "video", "problem"


@dataclass(frozen=True)
class Input:
    """One thing to predict: ``name`` is the path as it goes in the output's ``path`` column."""

    name: str
    kind: str  # IMAGE, VIDEO or PROBLEM
    problem: str = ""  # why a PROBLEM input yields nothing

    @property
    def path(self) -> Path:
        return Path(self.name)


def is_media_path(path: Path) -> bool:
    """A photo or a video by extension (what folders and globs keep)."""
    return is_image_path(path) or is_video_path(path)


def _file(path: Path) -> Input:
    return Input(str(path), VIDEO if is_video_path(path) else IMAGE)


def iter_inputs(items: Sequence[str | Path], *, warn: bool = True) -> Iterator[Input]:
    """The inputs in the order given, each file once.

    Files named explicitly are always tried (a mislabelled extension still gets decoded);
    folders and globs keep only photo and video extensions (the others are named in a warning
    per folder unless ``warn=False``).
    """
    # One folder or file cannot name a file twice; only several inputs need the seen-set (which
    # would otherwise hold every path of a survey).
    seen: set[str] | None = set() if len(items) > 1 else None
    for item in items:
        for entry in _expand(str(item), warn):
            if seen is not None and entry.kind != PROBLEM:
                if entry.name in seen:
                    continue
                seen.add(entry.name)
            yield entry


def _expand(text: str, warn: bool) -> Iterator[Input]:
    path = Path(text)
    if path.is_dir():
        yield from _folder(path, text, warn)
    elif path.is_file():
        yield _file(path)
    elif any(ch in text for ch in "*?["):
        found = False
        for match in sorted(glob.iglob(text, recursive=True)):
            m = Path(match)
            if m.is_dir():
                for entry in _folder(m, match, warn, quiet_if_empty=True):
                    found = True
                    yield entry
            elif m.is_file() and is_media_path(m):
                found = True
                yield _file(m)
        if not found:
            yield Input(text, PROBLEM, "no image files match this pattern")
    else:
        yield Input(text, PROBLEM, "no such file or folder")


def _folder(path: Path, text: str, warn: bool, *, quiet_if_empty: bool = False) -> Iterator[Input]:
    empty = True
    for found in iter_files(path, is_media_path, warn=warn):
        empty = False
        yield _file(found)
    if empty and not quiet_if_empty:
        yield Input(text, PROBLEM, "folder contains no images")


def first_real(inputs: Iterable[Input]) -> Iterator[Input]:
    """``inputs`` unchanged, but raise now, before anything is written, when none of them is a
    file: nothing to predict at all is a usage error (exit 2), not a partly failed batch.

    Reads ahead to the first file; the problems met before it are held (they are few).
    """
    held: list[Input] = []
    stream = iter(inputs)
    for entry in stream:
        held.append(entry)
        if entry.kind != PROBLEM:
            break
    else:
        where, reason = (held[0].name, held[0].problem) if held else (None, "no images given")
        raise MarineLifeError(reason, path=where, fix="pass image or video files, folders or globs")
    return itertools.chain(held, stream)


def expand_inputs(items: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every file as a list, and ``(input, reason)`` for inputs that named nothing.

    The list form of :func:`iter_inputs`, for small inputs and tests.
    """
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    for entry in iter_inputs(items):
        if entry.kind == PROBLEM:
            problems.append((entry.name, entry.problem))
        else:
            paths.append(entry.path)
    return paths, problems
