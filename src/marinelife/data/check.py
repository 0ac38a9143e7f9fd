"""`marinelife check`: decode every image, report bad files, class balance and leakage. Read-only.

Unlike :func:`~marinelife.data.scan.scan_dataset`, discovery here is tolerant: an empty class folder
or a class missing from a split is *reported* with everything else instead of stopping the scan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from marinelife.data.hashing import FileRecord, duplicate_groups, group_numbers
from marinelife.data.image_io import is_image_path
from marinelife.data.scan import (
    EXPECTED_LAYOUT,
    SPLITS,
    check_dataset_root,
    is_hidden,
    list_dir,
    split_folders,
)
from marinelife.errors import MarineLifeError
from marinelife.logutil import plural

TOO_SMALL = "too-small"
# Layout problem kinds (the file-level kinds live in hashing.py).
EMPTY_CLASS = "empty-class"
MISSING_CLASS = "missing-class"
UNKNOWN_CLASS = "unknown-class"
MISSING_SPLIT = "missing-split"
UNREADABLE_FOLDER = "unreadable-folder"
TOO_FEW_CLASSES = "too-few-classes"
_MAX_LISTED = 50


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    split: str  # train/val/test, or "all" in a flat layout
    label: str


@dataclass(frozen=True)
class Problem:
    kind: str
    path: Path
    message: str
    split: str | None = None
    label: str | None = None


@dataclass
class Inventory:
    """Every image file found under a dataset root, plus layout problems and ignored files."""

    root: Path
    flat: bool
    splits: list[str]
    classes: list[str]
    images: list[ImageEntry] = field(default_factory=list)
    layout_problems: list[Problem] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def _collect_class(inv: Inventory, class_dir: Path, split: str) -> int:
    """Add the images under one class folder (recursively); return how many."""
    count = 0
    try:
        paths = sorted(class_dir.rglob("*"))
    except OSError as exc:
        inv.layout_problems.append(
            Problem(UNREADABLE_FOLDER, class_dir, exc.strerror or str(exc), split, class_dir.name)
        )
        return 0
    for path in paths:
        if any(is_hidden(Path(part)) for part in path.relative_to(class_dir).parts):
            continue
        if not path.is_file():
            continue
        if is_image_path(path):
            inv.images.append(ImageEntry(path, split, class_dir.name))
            count += 1
        else:
            inv.ignored.append((path, "not an image file type"))
    if count == 0:
        inv.layout_problems.append(
            Problem(EMPTY_CLASS, class_dir, "class folder has no images", split, class_dir.name)
        )
    return count


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in list_dir(folder) if p.is_dir() and not is_hidden(p)]


def _loose_images(inv: Inventory, folder: Path) -> None:
    # Other loose files (README, manifest.csv, split.csv) are normal metadata, not worth a mention.
    for path in list_dir(folder):
        if path.is_file() and is_image_path(path):
            inv.ignored.append((path, "image not inside a class folder"))


def discover(root: str | Path) -> Inventory:
    """Find every image in ``ROOT/{train,val,test}/CLASS/`` or ``ROOT/CLASS/``.

    Raises :class:`MarineLifeError` only when nothing sensible can be read (missing path, a file,
    an empty folder, no images in class folders, split folders mixed with others).
    """
    root = Path(root).expanduser()
    check_dataset_root(root)
    subdirs = _subdirs(root)
    split_dirs = split_folders(root, subdirs)
    if not split_dirs:
        inv = Inventory(root, flat=True, splits=["all"], classes=[])
        _loose_images(inv, root)
        for class_dir in subdirs:
            _collect_class(inv, class_dir, "all")
        inv.classes = sorted({d.name for d in subdirs})
    else:
        splits = [s for s in SPLITS if s in split_dirs]
        inv = Inventory(root, flat=False, splits=splits, classes=[])
        _loose_images(inv, root)
        names: dict[str, set[str]] = {}
        for split in splits:
            _loose_images(inv, split_dirs[split])
            class_dirs = _subdirs(split_dirs[split])
            names[split] = {d.name for d in class_dirs}
            for class_dir in class_dirs:
                _collect_class(inv, class_dir, split)
        all_classes = sorted(set().union(*names.values()))
        if "train" not in splits:
            inv.layout_problems.append(
                Problem(MISSING_SPLIT, root / "train", "no train/ folder", "train")
            )
        train = names.get("train", set())
        for split in splits:
            for name in all_classes:
                folder = split_dirs[split] / name
                if name in train or "train" not in splits:
                    if name not in names[split]:
                        message = f"class has no {split} folder"
                        inv.layout_problems.append(
                            Problem(MISSING_CLASS, folder, message, split, name)
                        )
                elif name in names[split]:
                    message = "class is not in the training split"
                    inv.layout_problems.append(Problem(UNKNOWN_CLASS, folder, message, split, name))
        inv.classes = all_classes
    if not inv.images:
        raise MarineLifeError("contains no images in class folders", path=root, fix=EXPECTED_LAYOUT)
    with_images = sorted({e.label for e in inv.images})
    if len(with_images) < 2:
        inv.layout_problems.append(Problem(TOO_FEW_CLASSES, root, one_class_message(with_images)))
    return inv


def one_class_message(classes: list[str]) -> str:
    """Why a dataset of fewer than two classes cannot train a classifier (check/split/train)."""
    return (
        f"only {plural(len(classes), 'class')} with images ({', '.join(classes) or 'none'}): "
        "a classifier needs at least 2 — add a folder of photos for each other class "
        "(ROOT/CLASS/*.jpg)"
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _problem_dict(p: Problem, root: Path) -> dict:
    return {"kind": p.kind, "path": _rel(p.path, root), "split": p.split, "class": p.label,
            "message": p.message}  # fmt: skip


def build_report(inv: Inventory, records: list[FileRecord], *, min_size: int) -> dict:
    """The machine-readable check report (what ``--json`` prints)."""
    root = inv.root
    problems: list[Problem] = []
    counts = {s: Counter() for s in inv.splits}
    for entry, rec in zip(inv.images, records):
        if not rec.ok:
            problems.append(Problem(rec.problem, entry.path, rec.message, entry.split, entry.label))
            continue
        counts[entry.split][entry.label] += 1
        if min(rec.width, rec.height) < min_size:
            message = f"{rec.width}x{rec.height} px is smaller than --min-size {min_size}"
            problems.append(Problem(TOO_SMALL, entry.path, message, entry.split, entry.label))
    problems.sort(key=lambda p: _rel(p.path, root))
    imbalance = {}
    # Classes with no readable image anywhere are reported as layout problems, not as imbalance.
    real = [c for c in inv.classes if any(counts[s][c] for s in inv.splits)]
    for split in inv.splits:
        values = [counts[split][c] for c in real]
        imbalance[split] = round(max(values) / min(values), 2) if values and min(values) else None
    groups = []
    found = duplicate_groups(records)
    # split's rule (hashing.group_numbers): run on the same folder, both name a group alike.
    keys = [_rel(e.path, root) for e in inv.images]
    numbers = group_numbers([g.indices for g in found], keys)
    for k, group in sorted(zip(numbers, found), key=lambda pair: pair[0]):
        members = [inv.images[i] for i in group.indices]
        splits = sorted({m.split for m in members}, key=_split_order)
        labels = sorted({m.label for m in members})
        groups.append({
            "id": k,
            "exact": group.exact,
            "leakage": len(splits) > 1,
            "conflicting_labels": len(labels) > 1,
            "splits": splits,
            "classes": labels,
            "members": [{"path": _rel(m.path, root), "split": m.split, "class": m.label,
                         "sha256": records[i].sha256} for m, i in zip(members, group.indices)],
        })  # fmt: skip
    n_bad = sum(1 for p in problems if p.kind != TOO_SMALL)
    summary = {
        "bad_files": n_bad,
        "too_small": len(problems) - n_bad,
        "layout_problems": len(inv.layout_problems),
        "duplicate_groups": len(groups),
        "leakage_groups": sum(g["leakage"] for g in groups),
        "conflicting_label_groups": sum(g["conflicting_labels"] for g in groups),
    }
    bad_groups = sum(g["leakage"] or g["conflicting_labels"] for g in groups)
    summary["problems"] = len(problems) + summary["layout_problems"] + bad_groups
    return {
        "root": str(root),
        "layout": "flat" if inv.flat else "split",
        "splits": inv.splits,
        "classes": inv.classes,
        "min_size": min_size,
        "images": len(inv.images),
        "readable": sum(r.ok for r in records),
        "counts": {s: {c: counts[s][c] for c in inv.classes} for s in inv.splits},
        "imbalance": imbalance,
        "problems": [_problem_dict(p, root) for p in problems + inv.layout_problems],
        "duplicate_groups": groups,
        "ignored_files": [{"path": _rel(p, root), "reason": why} for p, why in inv.ignored],
        "summary": summary,
        "ok": summary["problems"] == 0,
    }


def _split_order(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def format_count_table(counts: dict[str, dict[str, int]], classes: list[str]) -> list[str]:
    """Rows of a class x split count table with a total row (shared with `split`)."""
    splits = list(counts)
    width = max([len("class"), len("total")] + [len(c) for c in classes]) + 2
    lines = ["class".ljust(width) + "".join(s.rjust(8) for s in splits)]
    for name in classes:
        lines.append(name.ljust(width) + "".join(f"{counts[s].get(name, 0):8d}" for s in splits))
    lines.append("total".ljust(width) + "".join(f"{sum(counts[s].values()):8d}" for s in splits))
    return lines


def _plural(n: int, noun: str, tail: str = "") -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}{tail}" if n else ""


def format_report(report: dict) -> str:
    """The terminal rendering of :func:`build_report`'s dictionary."""
    s = report["summary"]
    lines = [
        f"{report['root']}: {report['layout']} layout ({', '.join(report['splits'])}), "
        f"{plural(len(report['classes']), 'class')}, {plural(report['images'], 'image file')}, "
        f"{report['readable']:,} readable",
        "",
        *format_count_table(report["counts"], report["classes"]),
    ]
    ratios = [report["imbalance"][sp] for sp in report["splits"]]
    width = len(lines[-1]) - 8 * len(ratios)
    lines.append("imbalance".ljust(width) + "".join(
        f"{r:8.2f}" if r is not None else "     inf" for r in ratios
    ))  # fmt: skip
    lines.append("(imbalance = largest / smallest class count)")
    problems = report["problems"]
    lines.append("")
    if problems:
        lines.append(f"Problems ({len(problems)}):")
        kind_width = max(len(p["kind"]) for p in problems)
        for p in problems[:_MAX_LISTED]:
            lines.append(f"  {p['kind'].ljust(kind_width)}  {p['path']}: {p['message']}")
        if len(problems) > _MAX_LISTED:
            lines.append(f"  ... {len(problems) - _MAX_LISTED} more (use --json for all)")
    else:
        lines.append("No bad files.")
    groups = report["duplicate_groups"]
    if groups:
        lines.append(
            f"Duplicate groups ({len(groups)}): {s['leakage_groups']} across splits (leakage), "
            f"{s['conflicting_label_groups']} with conflicting labels"
        )
        for g in groups[:_MAX_LISTED]:
            tags = ["exact" if g["exact"] else "near-duplicate"]
            if g["leakage"]:
                tags.append("LEAKAGE " + "+".join(g["splits"]))
            if g["conflicting_labels"]:
                tags.append("CONFLICTING LABELS " + " / ".join(g["classes"]))
            if not (g["leakage"] or g["conflicting_labels"]):
                tags.append("same split and class: not a problem")
            lines.append(f"  group {g['id']} [{', '.join(tags)}]")
            lines.extend(f"    {m['path']}" for m in g["members"])
        if len(groups) > _MAX_LISTED:
            lines.append(f"  ... {len(groups) - _MAX_LISTED} more (use --json for all)")
    else:
        lines.append("No duplicates or near-duplicates.")
    if report["ignored_files"]:
        names = ", ".join(f["path"] for f in report["ignored_files"][:5])
        more = len(report["ignored_files"]) - 5
        lines.append(
            f"Ignored {plural(len(report['ignored_files']), 'file')} (not images, or outside class "
            "folders): "
            f"{names}" + (f", ... {more} more" if more > 0 else "")
        )
    lines.append("")
    if report["ok"]:
        lines.append("OK: no problems found.")
    else:
        parts = [
            _plural(s["bad_files"], "bad file"),
            _plural(s["too_small"], "too-small image"),
            _plural(s["layout_problems"], "layout problem"),
            _plural(s["leakage_groups"], "duplicate group", " leaking across splits"),
            _plural(s["conflicting_label_groups"], "duplicate group", " with conflicting labels"),
        ]
        lines.append(f"{_plural(s['problems'], 'problem')}: " + ", ".join(p for p in parts if p))
    return "\n".join(lines)
