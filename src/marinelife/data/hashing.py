"""Read every image once: content hash, full decode, perceptual fingerprint; group duplicates.

Exact duplicates share a SHA-256. Near-duplicates (resized, recompressed, grey-scaled copies) are
found in two steps, because a 64-bit perceptual hash alone also pairs unrelated open-water photos:
pairs whose pHash differs in at most ``PHASH_MAX_DISTANCE`` bits are candidates (vectorised numpy,
chunked: fast on tens of thousands of images), and a candidate is confirmed when the Pearson
correlation of the two 16x16 grey thumbnails is at least ``THUMB_MIN_CORRELATION``.

Thresholds were measured on sea-animals-dev (1,664 deduplicated photos, 1.38 M unrelated pairs) plus
2,700 planted copies of 300 of its photos (1/2, 1/3, 1/4 and 1.6x size; JPEG quality 15, 30, 40;
grey; grey + half size + quality 40). Unrelated pairs: pHash distance >= 8, and the best thumbnail
correlation among the 150 pairs within 14 bits is 0.81 (0.965 without the hash test). Copies:
pHash distance <= 6 and correlation >= 0.98, except quality-15 copies (up to 18 bits, 0.92); one of
those 2,700 copies was missed, no unrelated pair was grouped.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from marinelife.data.image_io import load_image
from marinelife.errors import ImageDecodeError
from marinelife.logutil import progress_enabled

PHASH_MAX_DISTANCE = 14
THUMB_SIZE = 16
THUMB_MIN_CORRELATION = 0.95

# Problem kinds of a file that cannot be used as an image (``FileRecord.problem``).
ZERO_BYTE = "zero-byte"
NON_IMAGE = "non-image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
TOO_LARGE = "too-large"
UNREADABLE = "unreadable"

# Leading bytes of the formats image_io accepts: decides "not an image" vs "a broken image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00",
               b"MM\x00*")  # fmt: skip
# Bounds the (rows x n) distance block of the pairwise search to ~32 MB of uint64.
_PAIR_BLOCK_ELEMENTS = 4_000_000
_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class ImageFingerprint:
    """64-bit pHash plus a zero-mean, unit-norm 16x16 grey thumbnail (float32, flattened)."""

    phash: int
    thumb: np.ndarray


@dataclass(frozen=True)
class FileRecord:
    """What reading one file found. ``problem`` is ``None`` for a decodable image."""

    path: Path
    size_bytes: int
    sha256: str | None
    width: int = 0
    height: int = 0
    fingerprint: ImageFingerprint | None = None
    problem: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are the same picture. ``exact``: every member has the same bytes."""

    indices: tuple[int, ...]
    paths: tuple[Path, ...]
    exact: bool


def fingerprint(img: Image.Image) -> ImageFingerprint:
    """Perceptual fingerprint of a decoded image; grey-level only, so grey copies still match."""
    # One antialiased resize to pHash's own 32x32 input (imagehash's resize is then a copy); the
    # thumbnail comes from that. reducing_gap=3 box-reduces first: ~3x faster, same result.
    small = img.convert("L").resize((32, 32), Image.LANCZOS, reducing_gap=3.0)
    bits = imagehash.phash(small).hash.ravel()
    phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    thumb = np.asarray(small.resize((THUMB_SIZE, THUMB_SIZE), Image.LANCZOS), dtype=np.float32)
    thumb = thumb.ravel() - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    # A flat image has no structure to correlate; a zero vector never confirms a match.
    thumb = thumb / norm if norm > 1e-3 else np.zeros_like(thumb)
    return ImageFingerprint(phash=phash, thumb=thumb)


def _looks_like_image(head: bytes) -> bool:
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _short_reason(exc: Exception, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return text.split(" — ")[0]


def _classify(head: bytes, reason: str) -> str:
    text = reason.lower()
    if not _looks_like_image(head):
        return NON_IMAGE
    if "truncat" in text:
        return TRUNCATED
    if "bomb" in text or "pixel limit" in text:
        return TOO_LARGE
    return CORRUPT


def analyze_file(path: str | Path) -> FileRecord:
    """Hash, fully decode (``load_image``) and fingerprint one file; never raises for bad files."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileRecord(path, 0, None, problem=UNREADABLE, message=exc.strerror or str(exc))
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return FileRecord(path, 0, sha, problem=ZERO_BYTE, message="zero-byte file")
    try:
        img = load_image(data, name=str(path))
    except ImageDecodeError as exc:
        reason = _short_reason(exc, path)
        return FileRecord(
            path, len(data), sha, problem=_classify(data[:16], reason), message=reason
        )
    return FileRecord(path, len(data), sha, img.width, img.height, fingerprint(img))


def default_workers() -> int:
    """``MARINELIFE_WORKERS`` when set, else the CPU count (at most 4: reading is I/O-bound too)."""
    value = os.environ.get("MARINELIFE_WORKERS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(4, os.cpu_count() or 1))


def progress_disabled() -> bool:
    return not progress_enabled()


def analyze_files(
    paths: Sequence[str | Path], *, workers: int | None = None, desc: str = "reading images"
) -> list[FileRecord]:
    """:func:`analyze_file` for every path, in order, with a progress bar on stderr.

    Threads suffice: Pillow's decoders, resizing and hashlib release the GIL.
    """
    workers = workers or default_workers()
    bar = tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr,
               disable=progress_disabled(), dynamic_ncols=True)  # fmt: skip
    with bar:
        if workers == 1:
            records = []
            for p in paths:
                records.append(analyze_file(p))
                bar.update()
            return records
        with ThreadPoolExecutor(max_workers=workers) as pool:
            records = []
            for record in pool.map(analyze_file, paths, chunksize=16):
                records.append(record)
                bar.update()
            return records


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)


def near_duplicate_pairs(
    phashes: np.ndarray,
    thumbs: np.ndarray,
    *,
    max_distance: int = PHASH_MAX_DISTANCE,
    min_correlation: float = THUMB_MIN_CORRELATION,
) -> np.ndarray:
    """``(k, 2)`` index pairs ``i < j`` that are near-duplicates (see the module docstring)."""
    phashes = np.asarray(phashes, dtype=np.uint64)
    thumbs = np.asarray(thumbs, dtype=np.float32)
    n = len(phashes)
    step = max(1, _PAIR_BLOCK_ELEMENTS // max(n, 1))
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, n, step):
        block = phashes[start : start + step]
        # Only columns from `start` on: each unordered pair is looked at once.
        dist = _popcount(block[:, None] ^ phashes[None, start:])
        rows, cols = np.nonzero(dist <= max_distance)
        i, j = rows + start, cols + start
        keep = j > i
        i, j = i[keep], j[keep]
        if not len(i):
            continue
        corr = np.einsum("ij,ij->i", thumbs[i], thumbs[j])
        ok = corr >= min_correlation
        found.append(np.stack([i[ok], j[ok]], axis=1))
    return np.concatenate(found)


def duplicate_components(records: Sequence[FileRecord]) -> list[tuple[int, ...]]:
    """Every decodable record's component (singletons included), ordered by smallest index.

    Exact copies (same SHA-256) and confirmed near-duplicates are joined transitively.
    """
    usable = [i for i, r in enumerate(records) if r.ok and r.fingerprint is not None]
    if not usable:
        return []
    local = {idx: k for k, idx in enumerate(usable)}
    edges = []
    first_with_sha: dict[str, int] = {}
    for idx in usable:
        sha = records[idx].sha256
        if sha in first_with_sha:
            edges.append((first_with_sha[sha], local[idx]))
        else:
            first_with_sha[sha] = local[idx]
    fps = [records[i].fingerprint for i in usable]
    phashes = np.array([f.phash for f in fps], dtype=np.uint64)
    thumbs = np.stack([f.thumb for f in fps])
    near = near_duplicate_pairs(phashes, thumbs)
    pairs = np.concatenate([np.asarray(edges, dtype=np.int64).reshape(-1, 2), near])
    m = len(usable)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for k, label in enumerate(labels):
        members.setdefault(int(label), []).append(usable[k])
    return sorted((tuple(v) for v in members.values()), key=lambda g: g[0])


def group_numbers(components: Sequence[Sequence[int]], keys: Sequence[Any]) -> list[int]:
    """A number per component, the one rule `check` and `split` share so that "group 3" names
    the same photos in both: duplicate groups (2+ members) first, numbered from 1 in the order
    of their smallest key (the photo's path relative to the folder given), then single photos.
    """
    order = sorted(
        range(len(components)),
        key=lambda c: (len(components[c]) < 2, min(keys[i] for i in components[c])),
    )
    numbers = [0] * len(components)
    for number, c in enumerate(order, start=1):
        numbers[c] = number
    return numbers


def duplicate_groups(records: Sequence[FileRecord]) -> list[DuplicateGroup]:
    """Components with two or more members, as :class:`DuplicateGroup` (indices into records)."""
    groups = []
    for comp in duplicate_components(records):
        if len(comp) < 2:
            continue
        exact = len({records[i].sha256 for i in comp}) == 1
        groups.append(DuplicateGroup(comp, tuple(records[i].path for i in comp), exact))
    return groups


def find_duplicate_groups(
    paths: Sequence[str | Path], *, workers: int | None = None
) -> list[DuplicateGroup]:
    """Exact and near-duplicate groups among image files; unreadable files are ignored.

    ``indices`` refer to positions in ``paths`` (e.g. to keep a group inside one CV fold).
    """
    return duplicate_groups(analyze_files(paths, workers=workers, desc="hashing images"))


def group_ids(paths: Sequence[str | Path], *, workers: int | None = None) -> list[int]:
    """A duplicate-group id per path: the ``groups=`` of sklearn's (Stratified)GroupKFold.

    Copies share an id; every other file, unreadable ones included, gets an id of its own.
    """
    records = analyze_files(paths, workers=workers, desc="hashing images")
    ids = [-1] * len(records)
    components = duplicate_components(records)
    for gid, comp in enumerate(components):
        for i in comp:
            ids[i] = gid
    next_id = len(components)
    for i, gid in enumerate(ids):
        if gid < 0:
            ids[i] = next_id
            next_id += 1
    return ids
