"""`marinelife split`: stratified, deterministic, duplicate-aware train/val/test split.

Exact and near-duplicate groups (see :mod:`marinelife.data.hashing`) stay inside one split, so a
photo and its resized or grey copy can never sit on both sides of an evaluation. Groups whose
members carry different class labels are left out and reported, as are unreadable files. The source
folder is only read; the result is written next to DST and renamed into place when complete.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marinelife.data.check import (
    EMPTY_CLASS,
    UNREADABLE_FOLDER,
    ImageEntry,
    discover,
    format_count_table,
)
from marinelife.data.hashing import FileRecord, analyze_files, duplicate_components
from marinelife.data.scan import SPLITS
from marinelife.errors import MarineLifeError

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
) -> list[Assignment]:
    """Assign every image (``entries`` sorted by path) to a split, or leave it out with a reason."""
    components = duplicate_components(records)
    group_of: dict[int, int] = {}
    for gid, comp in enumerate(components):
        for i in comp:
            group_of[i] = gid
    conflicting = {}
    for gid, comp in enumerate(components):
        classes = sorted({entries[i].label for i in comp})
        if len(classes) > 1:
            conflicting[gid] = (
                f"duplicate group {gid} has conflicting labels ({', '.join(classes)})"
            )
    kept = [gid for gid in range(len(components)) if gid not in conflicting]
    splits = assign_groups(
        [entries[components[g][0]].label for g in kept],
        [len(components[g]) for g in kept],
        val=val,
        test=test,
        seed=seed,
    )
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
        if gid in conflicting:
            plan.append(Assignment(entry, rec, gid, None, conflicting[gid]))
        else:
            plan.append(Assignment(entry, rec, gid, split_of[gid]))
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


def _check_class_sizes(plan: list[Assignment], src: Path, active: list[str]) -> None:
    have: dict[str, Counter] = {}
    for a in plan:
        if a.split is not None:
            have.setdefault(a.entry.label, Counter())[a.split] += 1
    for label in sorted({a.entry.label for a in plan} - set(have)):
        log.warning("class '%s' has no usable images and is left out of the split", label)
    short = sorted(c for c, n in have.items() if any(n[s] == 0 for s in active))
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
    plan: list[Assignment], names: list[str | None], src: Path, dst: Path, mode: str
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
) -> Path:
    """Split ``SRC/CLASS/*`` (or pool an existing ``SRC/{train,val,test}/CLASS/*``) into DST."""
    if mode not in ("copy", "link"):
        raise MarineLifeError(f"unknown split mode {mode!r}", fix="use 'copy' or 'link'")
    _check_fractions(val, test)
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    inv = discover(src)
    check_destination(dst, src)
    for problem in inv.layout_problems:
        # Pooling makes missing or val/test-only classes harmless; empty or unreadable ones are not.
        if problem.kind in (EMPTY_CLASS, UNREADABLE_FOLDER):
            log.warning("%s: %s (skipped)", problem.path, problem.message)
    entries = sorted(inv.images, key=lambda e: e.path.relative_to(src).as_posix())
    records = analyze_files([e.path for e in entries], desc="split: reading images")
    plan = plan_split(entries, records, val=val, test=test, seed=seed)
    active = [s for s, f in (("train", 1.0), ("val", val), ("test", test)) if f > 0]
    _check_class_sizes(plan, src, active)
    _write(plan, _dest_names(plan), src, dst, mode)
    _print_summary(plan, src, dst, active)
    return dst


def _print_summary(plan: list[Assignment], src: Path, dst: Path, active: list[str]) -> None:
    counts = {s: Counter() for s in SPLITS if s in active}
    for a in plan:
        if a.split is not None:
            counts[a.split][a.entry.label] += 1
    classes = sorted({a.entry.label for a in plan if a.split is not None})
    kept = sum(sum(c.values()) for c in counts.values())
    sizes = Counter(a.group for a in plan if a.split is not None)
    grouped = sum(n for n in sizes.values() if n > 1)
    lines = [f"Split {kept:,} images into {dst}:", "", *format_count_table(counts, classes), ""]
    if grouped:
        multi = sum(1 for n in sizes.values() if n > 1)
        lines.append(f"{grouped} images in {multi} duplicate groups were kept inside one split.")
    left_out = [a for a in plan if a.split is None]
    if left_out:
        lines.append(f"Left out {len(left_out)} files (listed in {dst / 'excluded.csv'}):")
        for a in left_out[:20]:
            lines.append(f"  {a.entry.path.relative_to(src).as_posix()}: {a.reason}")
        if len(left_out) > 20:
            lines.append(f"  ... {len(left_out) - 20} more")
    print("\n".join(lines))
