"""`marinelife split`: stratified, deterministic, duplicate-aware train/val/test split.

Exact and near-duplicate groups (see :mod:`marinelife.data.hashing`) stay inside one split, so a
photo and its resized or grey copy can never sit on both sides of an evaluation. With ``groups``
(sites, dives, days; :mod:`marinelife.data.groups`) whole groups are placed instead, joined with
the duplicate groups (:mod:`marinelife.data.group_split`). Groups whose members carry different
class labels are left out and reported, as are unreadable files. The source folder is only read;
the result is written next to DST and renamed into place when complete. ``split_report.json`` in
DST says how far each split's class mix is from the whole.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marinelife.data import group_split as gs
from marinelife.data.check import (
    EMPTY_CLASS,
    TOO_FEW_CLASSES,
    UNREADABLE_FOLDER,
    ImageEntry,
    discover,
    format_count_table,
)
from marinelife.data.groups import GroupSource, parse_group_source, resolve_groups
from marinelife.data.hashing import FileRecord, analyze_files, duplicate_components, group_numbers
from marinelife.data.scan import SPLITS
from marinelife.errors import MarineLifeError
from marinelife.logutil import plural

log = logging.getLogger(__name__)

SPLIT_CSV_COLUMNS = ("source", "split", "class", "group", "sha256", "file")
EXCLUDED_CSV_COLUMNS = ("source", "class", "reason", "group", "sha256")


@dataclass(frozen=True)
class Assignment:
    """One image's place in the split (``split`` is None when it is left out)."""

    entry: ImageEntry
    record: FileRecord
    group: int | None
    split: str | None
    reason: str = ""
    user_group: str | None = None  # from --groups


def _targets(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images per split for a class of ``n``: rounded, and at least one wherever possible."""
    active = [s for s in ("val", "test") if fractions[s] > 0]
    targets = {s: math.floor(n * fractions[s] + 0.5) for s in active}
    if n > len(active):
        targets = {s: max(1, t) for s, t in targets.items()}
    targets["train"] = n - sum(targets.values())
    return targets


def assign_groups(
    labels: list[str], sizes: list[int], *, val: float, test: float, seed: int
) -> list[str]:
    """Split name for each group, stratified by label and weighted by group size.

    Per class (with its own seeded generator, so one class never shifts another), groups are
    shuffled, placed largest first, each into the split furthest below its target share. With no
    duplicates this hits the rounded targets exactly; sklearn's splitters cannot weight groups.
    """
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    by_label: dict[str, list[int]] = {}
    for g, label in enumerate(labels):
        by_label.setdefault(label, []).append(g)
    result = [""] * len(labels)
    for label in sorted(by_label):
        groups = by_label[label]
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        order = [groups[k] for k in rng.permutation(len(groups))]
        order.sort(key=lambda g: -sizes[g])  # stable: ties keep the shuffled order
        targets = _targets(sum(sizes[g] for g in groups), fractions)
        filled = dict.fromkeys(targets, 0)
        for g in order:
            best = max(
                targets,
                key=lambda s: (
                    (targets[s] - filled[s]) / max(targets[s], 1),
                    targets[s] - filled[s],
                ),
            )
            result[g] = best
            filled[best] += sizes[g]
    return result


def plan_split(
    entries: list[ImageEntry],
    records: list[FileRecord],
    *,
    val: float,
    test: float,
    seed: int,
    groups: Sequence[str] | None = None,
) -> list[Assignment]:
    """Assign every image (``entries`` sorted by path) to a split, or leave it out with a reason.

    ``groups`` (one name per entry) keeps each group, joined with its duplicates, in one split.
    """
    components = duplicate_components(records)
    # The group number shown (split.csv, messages) follows check's rule: entries are sorted by
    # relative path, so an entry's index orders like its path does.
    number = group_numbers(components, range(len(entries)))
    group_of: dict[int, int] = {}
    for gid, comp in enumerate(components):
        for i in comp:
            group_of[i] = gid
    conflicting = {}
    for gid, comp in enumerate(components):
        classes = sorted({entries[i].label for i in comp})
        if len(classes) > 1:
            conflicting[gid] = (
                f"duplicate group {number[gid]} has conflicting labels ({', '.join(classes)})"
            )
    kept = [gid for gid in range(len(components)) if gid not in conflicting]
    if groups is None:
        splits = assign_groups(
            [entries[components[g][0]].label for g in kept],
            [len(components[g]) for g in kept],
            val=val,
            test=test,
            seed=seed,
        )
    else:
        splits = gs.split_components([components[g] for g in kept], [e.label for e in entries],
                                     groups, val=val, test=test, seed=seed)  # fmt: skip
    split_of = dict(zip(kept, splits))
    plan = []
    for i, (entry, rec) in enumerate(zip(entries, records)):
        if not rec.ok:
            reason = rec.message
            if not reason.startswith(str(rec.problem)):
                reason = f"{rec.problem}: {reason}"
            plan.append(Assignment(entry, rec, None, None, reason))
            continue
        gid = group_of[i]
        user = groups[i] if groups is not None else None
        if gid in conflicting:
            plan.append(Assignment(entry, rec, number[gid], None, conflicting[gid], user))
        else:
            plan.append(Assignment(entry, rec, number[gid], split_of[gid], user_group=user))
    return plan


def _check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise MarineLifeError(
            f"--val {val} and --test {test} must be fractions in [0, 1) summing to less than 1",
            fix="e.g. --val 0.15 --test 0.15",
        )


def check_destination(dst: Path, src: Path | None = None) -> None:
    """Refuse a DST that lies inside SRC, is a file, or is not empty."""
    if src is not None:
        src_real, dst_real = src.resolve(), dst.resolve()
        if dst_real == src_real or dst_real.is_relative_to(src_real):
            raise MarineLifeError(
                f"is inside the source folder {src}", path=dst, fix="choose a folder outside it"
            )
    if dst.exists() and not dst.is_dir():
        raise MarineLifeError("exists and is a file", path=dst, fix="choose a new folder")
    if dst.is_dir() and any(dst.iterdir()):
        raise MarineLifeError(
            "is not empty", path=dst, fix="choose a new or empty folder (split never overwrites)"
        )


def _check_class_sizes(
    plan: list[Assignment], src: Path, active: list[str], grouped: bool = False
) -> None:
    have: dict[str, Counter] = {}
    for a in plan:
        if a.split is not None:
            have.setdefault(a.entry.label, Counter())[a.split] += 1
    for label in sorted({a.entry.label for a in plan} - set(have)):
        log.warning("class '%s' has no usable images and is left out of the split", label)
    # With --groups a class seen at one site only cannot be in every split: that is the honest
    # answer (warned in the summary); only a class missing from train cannot be evaluated at all.
    needed = ["train"] if grouped else active
    short = sorted(c for c, n in have.items() if any(n[s] == 0 for s in needed))
    if short and grouped:
        names = ", ".join(f"'{c}'" for c in short[:5])
        raise MarineLifeError(
            f"no group could bring class {names} into train (its groups fill the other splits)",
            path=src,
            fix="add photos of it from more groups, remove its folder, or use coarser --groups",
        )
    if short:
        names = ", ".join(f"'{c}' ({sum(have[c].values())})" for c in short[:5])
        raise MarineLifeError(
            f"too few distinct usable images to fill {'/'.join(active)} for class {names}",
            path=src,
            fix="add images to those classes, remove their folders, or lower --val/--test",
        )


def _dest_names(plan: list[Assignment]) -> list[str | None]:
    """DST-relative path per image; a clashing file name gets its hash prefix appended."""
    used: set[str] = set()
    names: list[str | None] = []
    for a in plan:
        if a.split is None:
            names.append(None)
            continue
        folder = f"{a.split}/{a.entry.label}"
        name = a.entry.path.name
        candidate = f"{folder}/{name}"
        k = 0
        # Case-insensitive: the split must also be writable on macOS and Windows file systems.
        while candidate.lower() in used:
            k += 1
            stem, suffix = a.entry.path.stem, a.entry.path.suffix
            extra = a.record.sha256[:8] + (f"-{k}" if k > 1 else "")
            candidate = f"{folder}/{stem}_{extra}{suffix}"
        used.add(candidate.lower())
        names.append(candidate)
    return names


class _Placer:
    """Copy, or hard-link and fall back to copying (once warned) where linking fails."""

    def __init__(self, mode: str):
        self.link = mode == "link"

    def __call__(self, src: Path, dst: Path) -> None:
        if self.link:
            try:
                os.link(src, dst)
                return
            except OSError as exc:
                self.link = False
                log.warning("cannot hard-link into the destination (%s); copying instead", exc)
        shutil.copy2(src, dst)


def _write(
    plan: list[Assignment],
    names: list[str | None],
    src: Path,
    dst: Path,
    mode: str,
    extras: dict[str, str] | None = None,
) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    place = _Placer(mode)
    try:
        tmp.mkdir()
        rows, excluded = [], []
        for a, name in zip(plan, names):
            source = a.entry.path.relative_to(src).as_posix()
            group = "" if a.group is None else a.group
            if name is None:
                excluded.append((source, a.entry.label, a.reason, group, a.record.sha256 or ""))
                continue
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            place(a.entry.path, target)
            rows.append((source, a.split, a.entry.label, group, a.record.sha256, name))
        _write_csv(tmp / "split.csv", SPLIT_CSV_COLUMNS, rows)
        if excluded:
            _write_csv(tmp / "excluded.csv", EXCLUDED_CSV_COLUMNS, excluded)
        for file_name, text in (extras or {}).items():
            (tmp / file_name).write_text(text, encoding="utf-8")
        if dst.exists():
            dst.rmdir()  # checked empty before; rename cannot replace a folder otherwise
        tmp.rename(dst)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MarineLifeError(
            f"cannot write the split ({exc.strerror or exc})",
            path=dst,
            fix="check free space and permissions there",
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def run_split(
    src: Path,
    dst: Path,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 42,
    mode: str = "copy",
    groups: str | Path | GroupSource | None = None,
) -> Path:
    """Split ``SRC/CLASS/*`` (or pool an existing ``SRC/{train,val,test}/CLASS/*``) into DST.

    ``groups``: a group source (:mod:`marinelife.data.groups`); each group stays in one split.
    """
    if mode not in ("copy", "link"):
        raise MarineLifeError(f"unknown split mode {mode!r}", fix="use 'copy' or 'link'")
    _check_fractions(val, test)
    source = parse_group_source(groups) if groups is not None else None
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    inv = discover(src)
    check_destination(dst, src)
    for problem in inv.layout_problems:
        if problem.kind == TOO_FEW_CLASSES:
            raise MarineLifeError(problem.message, path=src)
        # Pooling makes missing or val/test-only classes harmless; empty or unreadable ones are not.
        if problem.kind in (EMPTY_CLASS, UNREADABLE_FOLDER):
            log.warning("%s: %s (skipped)", problem.path, problem.message)
    entries = sorted(inv.images, key=lambda e: e.path.relative_to(src).as_posix())
    # Groups before hashing: a bad CSV or pattern fails in a second, not after reading every image.
    user = resolve_groups(source, src, [e.path for e in entries]) if source else None
    records = analyze_files([e.path for e in entries], desc="split: reading images")
    plan = plan_split(entries, records, val=val, test=test, seed=seed, groups=user)
    active = [s for s, f in (("train", 1.0), ("val", val), ("test", test)) if f > 0]
    _check_class_sizes(plan, src, active, grouped=source is not None)
    names = _dest_names(plan)
    split_of, labels = [a.split for a in plan], [a.entry.label for a in plan]
    report = gs.split_report(source, split_of, labels, user)
    extras = {gs.REPORT_FILE: json.dumps(report, indent=1, ensure_ascii=False) + "\n"}
    if user is not None:
        rows = [(n, a.user_group) for a, n in zip(plan, names) if n is not None]
        extras[gs.GROUPS_FILE] = gs.groups_csv_text(rows)
    _write(plan, names, src, dst, mode, extras)
    _print_summary(plan, src, dst, active, report)
    return dst


def _print_summary(
    plan: list[Assignment], src: Path, dst: Path, active: list[str], report: dict | None = None
) -> None:
    counts = {s: Counter() for s in SPLITS if s in active}
    for a in plan:
        if a.split is not None:
            counts[a.split][a.entry.label] += 1
    classes = sorted({a.entry.label for a in plan if a.split is not None})
    kept = sum(sum(c.values()) for c in counts.values())
    sizes = Counter(a.group for a in plan if a.split is not None)
    grouped = sum(n for n in sizes.values() if n > 1)
    lines = [
        f"Split {plural(kept, 'image')} into {dst}:",
        "",
        *format_count_table(counts, classes),
        "",
    ]
    if grouped:
        multi = sum(1 for n in sizes.values() if n > 1)
        lines.append(f"{grouped} images in {multi} duplicate groups were kept inside one split.")
    if report:
        lines += gs.summary_lines(report, [a.split for a in plan], [a.entry.label for a in plan],
                                  dst)  # fmt: skip
    left_out = [a for a in plan if a.split is None]
    if left_out:
        lines.append(
            f"Left out {plural(len(left_out), 'file')} (listed in {dst / 'excluded.csv'}):"
        )
        for a in left_out[:20]:
            lines.append(f"  {a.entry.path.relative_to(src).as_posix()}: {a.reason}")
        if len(left_out) > 20:
            lines.append(f"  ... {len(left_out) - 20} more")
    print("\n".join(lines))
