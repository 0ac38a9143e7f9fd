"""Group sources: which photos belong together (one site, dive, camera or day).

``split --groups``, ``cv --groups`` and ``evaluate --by-group`` take one SOURCE string:

* ``FILE.csv`` (or ``csv:FILE``): a CSV whose header names the columns ``file`` and ``group``;
  ``file`` is relative to the folder given (PHOTOS for split, DATA for cv and evaluate). Every
  photo must have a line: a missing one is an error, not a group of its own, because a photo that
  silently forms its own group is exactly how a forgotten site leaks into the test split.
* ``regex:PATTERN``: searched in each photo's path relative to that folder (``/`` separators);
  the group is the first capture group, or the whole match when the pattern has none.
* ``level:N``: a folder below the class folder, ``level:1`` the one directly under it
  (``CLASS/SITE/photo.jpg``), ``level:2`` the next; negative counts up from the photo,
  ``level:-1`` being the folder that holds it. ``train``/``val``/``test`` folders are skipped.
* ``exif-date``: the day of EXIF ``DateTimeOriginal`` (local time of the camera), one day being
  one dive; photos without a usable date together form the one group ``no date``, so they can
  never straddle the splits.

A photo that a regex does not match or that lacks the folder level is an error naming it.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from marinelife.data.scan import SPLIT_ALIASES
from marinelife.errors import MarineLifeError

log = logging.getLogger(__name__)

NO_DATE = "no date"
SOURCE_SYNTAX = "FILE.csv (file,group), regex:PATTERN, level:N or exif-date"
_MAX_NAMED = 3


@dataclass(frozen=True)
class GroupSource:
    """A parsed SOURCE: ``kind`` is csv, regex, level or exif-date; ``text`` is what was given."""

    kind: str
    text: str
    path: Path | None = None
    pattern: re.Pattern[str] | None = None
    level: int = 0

    def __str__(self) -> str:
        return self.text


def parse_group_source(source: str | Path | GroupSource) -> GroupSource:
    """Parse a SOURCE string (see the module docstring); a ``Path`` is always a CSV file."""
    if isinstance(source, GroupSource):
        return source
    if isinstance(source, Path):
        return GroupSource("csv", str(source), path=source.expanduser())
    text = str(source).strip()
    kind, sep, value = text.partition(":")
    if sep and kind == "regex":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise MarineLifeError(
                f"--groups {text!r}: not a valid regular expression ({exc})",
                fix="e.g. regex:'(site-[0-9]+)'",
            ) from exc
        if not value:
            raise MarineLifeError(f"--groups {text!r}: empty pattern", fix="e.g. regex:'dive-\\d+'")
        return GroupSource("regex", text, pattern=pattern)
    if sep and kind == "level":
        try:
            level = int(value)
        except ValueError:
            level = 0
        if level == 0:
            raise MarineLifeError(
                f"--groups {text!r}: the level must be a non-zero integer",
                fix="level:1 is the folder directly under the class folder",
            )
        return GroupSource("level", text, level=level)
    if text in ("exif-date", "exif:date"):
        return GroupSource("exif-date", text)
    if (sep and kind == "csv") or text.lower().endswith(".csv"):
        path = Path(value if sep and kind == "csv" else text).expanduser()
        return GroupSource("csv", text, path=path)
    raise MarineLifeError(f"--groups {text!r} is not a group source", fix=f"use {SOURCE_SYNTAX}")


def relative_key(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators, NFC-normalised (macOS zips are NFD)."""
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError as exc:
            raise MarineLifeError(f"{path} is not inside the folder", path=root) from exc
    return unicodedata.normalize("NFC", rel.as_posix())


def resolve_groups(
    source: str | Path | GroupSource, root: str | Path, paths: Sequence[str | Path]
) -> list[str]:
    """The group name of every path (each inside ``root``), in order; user mistakes raise."""
    source = parse_group_source(source)
    root = Path(root)
    keys = [relative_key(p, root) for p in paths]
    if source.kind == "csv":
        return _csv_groups(source, root, keys)
    if source.kind == "exif-date":
        return _date_groups(paths)
    if source.kind == "regex":
        found = [_regex_group(source.pattern, k) for k in keys]
        why, fix = "the pattern does not match", "make the pattern match every path (relative"
        fix += f" to {root}), e.g. regex:'^[^/]+/([^/]+)/' for the folder under the class"
    else:
        found = [_level_group(source.level, k) for k in keys]
        why = f"no folder at level {source.level} below the class folder"
        fix = "put every photo in CLASS/SITE/ folders (level:1), or choose another --groups"
    missing = [k for k, g in zip(keys, found) if g is None]
    if missing:
        raise MarineLifeError(
            f"--groups {source.text}: {why} for {_some(missing)}", path=root, fix=fix
        )
    return [str(g) for g in found]


def _some(items: Sequence[str]) -> str:
    named = ", ".join(f"'{k}'" for k in items[:_MAX_NAMED])
    more = f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return f"{len(items)} photo{'s' if len(items) != 1 else ''} ({named}{more})"


def _regex_group(pattern: re.Pattern[str], key: str) -> str | None:
    match = pattern.search(key)
    if match is None:
        return None
    value = match.group(1) if pattern.groups else match.group(0)
    return value or None  # an empty capture names no group


def _level_group(level: int, key: str) -> str | None:
    parts = key.split("/")
    lead = 1 if len(parts) > 2 and parts[0].lower() in SPLIT_ALIASES else 0
    folders = parts[lead + 1 : -1]  # between the class folder and the file name
    index = level - 1 if level > 0 else len(folders) + level
    return folders[index] if 0 <= index < len(folders) else None


def _date_groups(paths: Sequence[str | Path]) -> list[str]:
    from marinelife.data.exif import read_photo_metadata

    days = []
    for path in paths:
        when = read_photo_metadata(Path(path)).datetime_original
        days.append(when[:10] if when else NO_DATE)  # ISO: the first 10 characters are the day
    undated = days.count(NO_DATE)
    if undated:
        log.warning(
            "exif-date: %d of %d photos have no capture date and form one group '%s'",
            undated,
            len(days),
            NO_DATE,
        )
    return days


def _normalise_file(value: str) -> str:
    value = unicodedata.normalize("NFC", value.strip().replace("\\", "/"))
    while value.startswith("./"):
        value = value[2:]
    return value


def read_group_csv(path: Path, root: Path) -> dict[str, str]:
    """``file`` (relative to ``root``) → group from a ``file,group`` CSV; every mistake is a
    one-line error naming the CSV line and the fix."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except FileNotFoundError as exc:
        raise MarineLifeError(
            "does not exist", path=path, fix="pass a CSV with the columns file,group"
        ) from exc
    except UnicodeDecodeError as exc:
        raise MarineLifeError("is not UTF-8 text", path=path, fix="save it as CSV UTF-8") from exc
    except OSError as exc:
        raise MarineLifeError(f"cannot be read ({exc.strerror or exc})", path=path) from exc
    lines = text.splitlines()
    first = lines[0] if lines else ""
    # Spreadsheets set to a European locale save with semicolons.
    delimiter = ";" if ";" in first and "," not in first else ","
    rows = csv.reader(lines, delimiter=delimiter)
    header = [h.strip().lower() for h in next(rows, [])]
    if "file" not in header or "group" not in header:
        raise MarineLifeError(
            f"line 1: the header must name the columns file,group (got {first.strip()[:60]!r})",
            path=path,
            fix="make the first line `file,group`",
        )
    col_file, col_group = header.index("file"), header.index("group")
    groups: dict[str, str] = {}
    where: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (max(col_file, col_group) + 1 - len(row))
        name, group = _normalise_file(cells[col_file]), cells[col_group].strip()
        if not name or not group:
            missing = "file" if not name else "group"
            raise MarineLifeError(
                f"line {number}: no {missing}",
                path=path,
                fix="every line is `file,group`, e.g. crab/IMG_0001.jpg,reef-a",
            )
        if Path(name).is_absolute():
            name = relative_key(name, root)
        if not (root / name).is_file():
            raise MarineLifeError(
                f"line {number}: '{name}' is not a file under {root}",
                path=path,
                fix=f"file paths are relative to {root}, e.g. CLASS/IMG_0001.jpg",
            )
        if name in groups and groups[name] != group:
            raise MarineLifeError(
                f"line {number}: '{name}' is in group '{groups[name]}' on line "
                f"{where[name]} already",
                path=path,
                fix="give every file one group",
            )
        groups[name] = group
        where.setdefault(name, number)
    return groups


def _csv_groups(source: GroupSource, root: Path, keys: Sequence[str]) -> list[str]:
    table = read_group_csv(source.path, root)
    missing = [k for k in keys if k not in table]
    if missing:
        raise MarineLifeError(
            f"has no line for {_some(missing)} under {root}",
            path=source.path,
            fix="add a `file,group` line for each (every photo needs a group)",
        )
    return [table[k] for k in keys]


def merge_groups(*labelings: Sequence[Hashable | None]) -> list[int]:
    """One id per item joining items that share a label in any labeling (``None``: no label).

    The union of duplicate groups and a user's sites: a copy of a site-A photo filed under site B
    pulls both sites into one group. Ids count up in order of first appearance.
    """
    n = len(labelings[0]) if labelings else 0
    if any(len(labels) != n for labels in labelings):
        raise ValueError("labelings differ in length")
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for labels in labelings:
        first: dict[Hashable, int] = {}
        for i, label in enumerate(labels):
            if label is None:
                continue
            j = first.setdefault(label, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    ids: dict[int, int] = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(n)]
