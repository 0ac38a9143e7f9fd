"""Discover a dataset on disk: ``ROOT/{train,val,test}/CLASS/*`` or a flat ``ROOT/CLASS/*``.

The class list comes from the training folder (sorted) and every other split is mapped through it,
so class indices never shift because a folder is empty or missing somewhere else.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from marinelife.data.image_io import is_image_path
from marinelife.errors import MarineLifeError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
EXPECTED_LAYOUT = "expected ROOT/{train,val,test}/CLASS/*.jpg, or ROOT/CLASS/*.jpg to `split`"
# System folders that never hold classes: macOS zip debris, Synology thumbnails, VCS metadata.
_SYSTEM_DIRS = {"__macosx", "@eadir", "$recycle.bin", "system volume information"}
# Companion files that are never photos (notes, labels, sidecars): skipped without a warning.
# Anything else that is not an image (.dng, .psd, .mov, ...) is named in one warning per scan.
_NOT_PHOTOS = frozenset(
    {".txt", ".md", ".csv", ".json", ".xml", ".yaml", ".yml", ".ini", ".db", ".xmp", ".aae"}
)
# While scan_dataset runs, find_images adds its skipped extensions here (one warning per scan).
_SKIPPED: ContextVar[Counter | None] = ContextVar("marinelife_scan_skipped", default=None)

log = logging.getLogger(__name__)


def is_hidden(path: Path) -> bool:
    """Dotfiles, dot-folders (``.git``, ``.ipynb_checkpoints``) and system folders."""
    name = path.name
    return name.startswith(".") or name.lower() in _SYSTEM_DIRS


def visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p))


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively, skipping hidden files and folders; sorted.

    Other visible files (except notes and sidecars, ``_NOT_PHOTOS``) are named in a warning.
    """
    found = []
    skipped: Counter = Counter()
    for path in folder.rglob("*"):
        rel_parts = path.relative_to(folder).parts
        if any(is_hidden(Path(part)) for part in rel_parts):
            continue
        if path.is_file():
            if is_image_path(path):
                found.append(path)
            elif path.suffix.lower() not in _NOT_PHOTOS:
                skipped[path.suffix.lower() or "(no extension)"] += 1
    collecting = _SKIPPED.get()
    if collecting is not None:
        collecting.update(skipped)
    else:
        warn_skipped(folder, skipped)
    return sorted(found)


def iter_files(folder: Path, keep: Callable[[Path], bool], *, warn: bool = True) -> Iterator[Path]:
    """Files under ``folder`` for which ``keep(path)`` holds, streamed in :func:`find_images`'s
    order (sorted paths), hidden files and folders skipped; the rest named in one warning
    (unless ``warn=False``).

    Only the listings of the folders being walked are in memory, so a survey tree of 100k+
    photos never becomes a list. Symlinked folders are not entered (a link back up the tree
    would never end).
    """
    skipped: Counter = Counter()

    def walk(directory: Path) -> Iterator[Path]:
        with os.scandir(directory) as listing:
            entries = [e for e in listing if not is_hidden(Path(e.name))]
        # By name, each folder's files where its name falls: sorted() of Paths (part by part).
        entries.sort(key=lambda e: e.name)
        for entry in entries:
            path = directory / entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from walk(path)
            elif entry.is_file():
                if keep(path):
                    yield path
                elif path.suffix.lower() not in _NOT_PHOTOS:
                    skipped[path.suffix.lower() or "(no extension)"] += 1

    yield from walk(folder)
    if warn:
        warn_skipped(folder, skipped)


def warn_skipped(folder: Path, skipped: Counter) -> None:
    """One warning naming the extensions ``find_images`` left out, most frequent first."""
    if skipped:
        total = sum(skipped.values())
        ordered = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
        counts = ", ".join(f"{ext} ({n})" for ext, n in ordered)
        log.warning(
            "%s: skipped %d file%s with unsupported extensions: %s",
            folder,
            total,
            "" if total == 1 else "s",
            counts,
        )


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass
class DatasetLayout:
    """What ``scan_dataset`` found. ``flat`` layouts keep all samples under the key ``"all"``."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    flat: bool = False

    @property
    def class_to_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def samples(self, split: str) -> list[Sample]:
        if split not in self.splits:
            raise MarineLifeError(
                f"no '{split}' split found", path=self.root, fix=EXPECTED_LAYOUT.capitalize()
            )
        return self.splits[split]

    def targets(self, split: str) -> list[int]:
        index = self.class_to_index
        return [index[s.label] for s in self.samples(split)]

    def counts(self, split: str) -> dict[str, int]:
        counter = Counter(s.label for s in self.samples(split))
        return {name: counter.get(name, 0) for name in self.classes}

    def all_samples(self) -> list[tuple[str, Sample]]:
        return [(split, s) for split, items in self.splits.items() for s in items]

    def require_splits(self, *names: str) -> None:
        """Raise the user-facing error when this is a flat folder or a named split is missing."""
        if self.flat:
            raise MarineLifeError(
                "is a flat ROOT/CLASS/* folder without train/val/test splits",
                path=self.root,
                fix=f"run `marinelife split {self.root} OUT_DIR` first and use OUT_DIR",
            )
        for name in names:
            self.samples(name)


def class_name(folder: Path) -> str:
    """A class folder's label, NFC-normalised so a macOS-zipped (NFD) 'Méduse' matches."""
    return unicodedata.normalize("NFC", folder.name)


def _class_dirs(folder: Path) -> dict[str, Path]:
    """Class label → folder, sorted by label; two folders with one label are an error."""
    found: dict[str, Path] = {}
    for sub in visible_subdirs(folder):
        name = class_name(sub)
        if name in found:
            raise MarineLifeError(
                f"has two folders for class '{name}' (differently encoded names)",
                path=folder,
                fix="merge them into one folder",
            )
        found[name] = sub
    return dict(sorted(found.items()))


def _class_images(class_dir: Path) -> list[Sample]:
    return [Sample(path, class_name(class_dir)) for path in find_images(class_dir)]


def list_dir(folder: Path) -> list[Path]:
    """``folder``'s entries, sorted; an unreadable folder is a user error naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise MarineLifeError(
            f"cannot be read ({exc.strerror or exc})", path=folder, fix=EXPECTED_LAYOUT
        ) from exc


def check_dataset_root(root: Path) -> None:
    """A dataset root must exist, be a folder and hold something visible."""
    if not root.exists():
        raise MarineLifeError("does not exist", path=root, fix=EXPECTED_LAYOUT)
    if not root.is_dir():
        raise MarineLifeError("is a file, not a folder", path=root, fix=EXPECTED_LAYOUT)
    if not any(not is_hidden(p) for p in list_dir(root)):
        raise MarineLifeError("is an empty folder", path=root, fix=EXPECTED_LAYOUT)


def split_folders(root: Path, subdirs: list[Path]) -> dict[str, Path]:
    """``{train,val,test}`` → their folders (aliases such as ``valid`` accepted); {} when flat.

    Two folders for one split, or split folders mixed with others, are refused.
    """
    found: dict[str, Path] = {}
    for sub in subdirs:
        canonical = SPLIT_ALIASES.get(sub.name.lower())
        if canonical is None:
            continue
        if canonical in found:
            raise MarineLifeError(
                f"has two folders for the '{canonical}' split ({found[canonical].name}, "
                f"{sub.name})",
                path=root,
                fix="keep one of them",
            )
        found[canonical] = sub
    others = [s.name for s in subdirs if s not in found.values()]
    if found and others:
        raise MarineLifeError(
            f"mixes split folders with other folders ({', '.join(others[:3])})",
            path=root,
            fix=EXPECTED_LAYOUT,
        )
    return found


def scan_dataset(root: str | Path) -> DatasetLayout:
    """Read a dataset folder; raise :class:`MarineLifeError` naming the path for any bad layout.

    Files with unsupported extensions in its class folders are named in one warning.
    """
    skipped: Counter = Counter()
    token = _SKIPPED.set(skipped)
    try:
        return _scan_dataset(root)
    finally:
        _SKIPPED.reset(token)
        warn_skipped(Path(root).expanduser(), skipped)


def _scan_dataset(root: str | Path) -> DatasetLayout:
    root = Path(root).expanduser()
    check_dataset_root(root)
    subdirs = visible_subdirs(root)
    split_dirs = split_folders(root, subdirs)
    if split_dirs:
        return _scan_split_layout(root, split_dirs)
    return _scan_flat_layout(root, subdirs)


def _scan_flat_layout(root: Path, subdirs: list[Path]) -> DatasetLayout:
    samples = [s for sub in subdirs for s in _class_images(sub)]
    if not samples:
        raise MarineLifeError("contains no images in class folders", path=root, fix=EXPECTED_LAYOUT)
    classes = sorted({s.label for s in samples})
    return DatasetLayout(root=root, classes=classes, splits={"all": samples}, flat=True)


def _scan_split_layout(root: Path, split_dirs: dict[str, Path]) -> DatasetLayout:
    if "train" not in split_dirs:
        raise MarineLifeError("has no train/ folder", path=root, fix=EXPECTED_LAYOUT)
    train_dir = split_dirs["train"]
    class_dirs = _class_dirs(train_dir)
    if not class_dirs:
        raise MarineLifeError("contains no class folders", path=train_dir, fix=EXPECTED_LAYOUT)
    splits: dict[str, list[Sample]] = {}
    train_samples = []
    for name, class_dir in class_dirs.items():
        images = _class_images(class_dir)
        if not images:
            raise MarineLifeError(
                f"class '{name}' has no images",
                path=class_dir,
                fix="add images or remove the empty class folder",
            )
        train_samples.extend(images)
    classes = list(class_dirs)
    splits["train"] = train_samples
    for split in ("val", "test"):
        if split not in split_dirs:
            continue
        folder = split_dirs[split]
        present = _class_dirs(folder)
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise MarineLifeError(
                f"class '{unknown[0]}' is not in the training split",
                path=present[unknown[0]],
                fix="rename it to a training class or add it to train/",
            )
        items = []
        for name in classes:
            images = _class_images(present[name]) if name in present else []
            if not images:
                raise MarineLifeError(
                    f"class '{name}' has no images in the {split} split",
                    path=folder / name,
                    fix=f"add {split} images for it (or re-run `marinelife split`)",
                )
            items.extend(images)
        splits[split] = items
    return DatasetLayout(root=root, classes=classes, splits=splits, flat=False)


def save_classes(classes: list[str], path: Path) -> None:
    path.write_text(json.dumps(classes, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def load_classes(path: Path) -> list[str]:
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MarineLifeError(f"cannot read class list ({exc})", path=path) from exc
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise MarineLifeError("must be a JSON list of class names", path=path)
    return classes
