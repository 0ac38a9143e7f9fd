"""Feature cache for frozen stages: push every image (and K augmented views) through the frozen
backbone once, then train the head on the cached tensors for as many epochs as the recipe wants.

Entries live under the user cache dir, keyed by the images' content hashes, the backbone name, its
weights hash and the full preprocessing/augmentation/denoise config, so they are reused across runs
and invalidated when any of those change. Features are stored as ``.npy`` and memory-mapped, so
datasets larger than RAM work; a checksum in the entry's ``meta.json`` (written last, atomically)
catches partial or corrupted files, which are rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from marinelife.data.image_io import load_image_array
from marinelife.data.scan import Sample
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.fileio import atomic_write_text, file_sha256
from marinelife.fit import distributed
from marinelife.logutil import progress

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def cache_dir() -> Path:
    base = os.environ.get("MARINELIFE_CACHE") or platformdirs.user_cache_dir("marinelife")
    return Path(base) / "features"


def cache_key(
    *,
    image_hashes: Sequence[str],
    backbone: str,
    weights_sha: str,
    preprocess: dict[str, Any],
    augment: dict[str, Any] | None,
    views: int,
    seed: int,
    precision: str = "none",
) -> str:
    """Hash of everything that determines the cached numbers; any change gives a new entry."""
    payload: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "images": list(image_hashes),
        "backbone": backbone,
        "weights": weights_sha,
        "preprocess": preprocess,
        "augment": augment if views > 0 else None,
        "views": views,
        "seed": seed if views > 0 else None,
    }
    if precision != "none":
        # Autocast changes the numbers; full-precision keys stay as they were before `amp`.
        payload["precision"] = precision
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def view_seed(seed: int, image_hash: str, view: int) -> int:
    """A per-(image, view) seed, so augmented views don't depend on order or worker count."""
    return zlib.crc32(f"{seed}:{image_hash}:{view}".encode()) & 0x7FFFFFFF


# feature_cache_views=-1: from this many training photos per class (mean) one augmented view is
# cached, below it SMALL_SET_VIEWS. Measured (docs/benchmarks.md, "Views by measurement"): with
# 265 photos per class 1, 2 and 4 views test alike and 0 loses ~0.5 point, so extra views only
# cost build time; with 44 per class (the dev set) the views were tuned at 4.
ONE_VIEW_PHOTOS_PER_CLASS = 150
SMALL_SET_VIEWS = 4


def views_by_data(requested: int, photos: int, classes: int) -> int:
    """``feature_cache_views`` with -1 resolved by the training set's photos per class."""
    if requested >= 0:
        return requested
    per_class = photos / max(classes, 1)
    views = 1 if per_class >= ONE_VIEW_PHOTOS_PER_CLASS else SMALL_SET_VIEWS
    log.info(
        "feature cache: %d augmented view(s) per photo (%.0f training photos per class; "
        "feature_cache_views=-1 picks 1 from %d)", views, per_class, ONE_VIEW_PHOTOS_PER_CLASS,
    )  # fmt: skip
    return views


class _ViewDataset(Dataset):
    """Item ``i * (views + 1) + v``: view ``v`` of image ``i`` (0 = clean, eval transform).

    A photo's views are consecutive items, so they land in the same batch (and loader worker):
    the last decoded photo is kept and its other views reuse it instead of decoding it again.
    """

    def __init__(self, samples, hashes, eval_transform, train_transform, views, seed, draft):
        self.samples, self.hashes = list(samples), list(hashes)
        self.eval_transform, self.train_transform = eval_transform, train_transform
        self.views, self.seed, self.draft = views, seed, draft
        self._last: tuple[int, np.ndarray | ImageDecodeError] | None = None

    def __len__(self) -> int:
        return len(self.samples) * (self.views + 1)

    def _decoded(self, i: int) -> np.ndarray | ImageDecodeError:
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        try:
            image = load_image_array(self.samples[i].path, draft_size=self.draft)
            image.flags.writeable = False  # shared by the photo's views: no transform may edit it
        except ImageDecodeError as exc:
            image = exc
        self._last = (i, image)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i, v = divmod(index, self.views + 1)
        image = self._decoded(i)
        if isinstance(image, ImageDecodeError):
            if v == 0:  # once per photo, not once per view
                log.warning("feature cache: unreadable image, using zeros: %s", image)
            return torch.zeros(0), index
        if v == 0:
            return self.eval_transform(image), index
        seeded = getattr(self.train_transform, "set_random_seed", None)
        if seeded is not None:
            seeded(view_seed(self.seed, self.hashes[i], v))
        return self.train_transform(image), index


def _collate(batch):
    shapes = {t.shape for t, _ in batch if t.numel()}
    template = torch.zeros(next(iter(shapes))) if shapes else torch.zeros(0)
    tensors = [t if t.numel() else template for t, _ in batch]
    return torch.stack(tensors), torch.tensor([i for _, i in batch])


def _checksum(path: Path) -> str:
    return file_sha256(path)


def load_entry(folder: Path, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    """The memory-mapped features of a complete, intact entry, or None (missing/partial/corrupt)."""
    meta_path, data_path = folder / "meta.json", folder / "features.npy"
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if tuple(meta["shape"]) != tuple(expected_shape) or meta["sha256"] != _checksum(data_path):
            raise ValueError("checksum or shape mismatch")
        array = np.load(data_path, mmap_mode="r")
        if array.shape != tuple(expected_shape):
            raise ValueError("shape mismatch")
        return array
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("feature cache entry %s is damaged (%s); rebuilding it", folder.name, exc)
        return None


def _rank_slice(step: int, rank: int, batch: int, world: int, total: int) -> range:
    """The items ``rank`` extracts at ``step``: its batch of the step's global block."""
    low = min(step * batch * world + rank * batch, total)
    return range(low, min(low + batch, total))


def build_features(
    *,
    samples: Sequence[Sample],
    hashes: Sequence[str],
    extract: Callable[[torch.Tensor], torch.Tensor],
    item_shape: tuple[int, ...],
    eval_transform: Callable,
    train_transform: Callable | None,
    views: int,
    seed: int,
    folder: Path,
    batch_size: int,
    workers: int,
    draft: tuple[int, int] | None,
    desc: str,
    writer: bool = True,
) -> np.ndarray:
    """Compute ``[N, views + 1, *item_shape]`` float32 outputs into ``folder``, then commit."""
    [features] = build_feature_sets(
        samples=samples, hashes=hashes, extract=extract, outputs=[(folder, item_shape)],
        eval_transform=eval_transform, train_transform=train_transform, views=views, seed=seed,
        batch_size=batch_size, workers=workers, draft=draft, desc=desc, writer=writer,
    )  # fmt: skip
    return features


def build_feature_sets(
    *,
    samples: Sequence[Sample],
    hashes: Sequence[str],
    extract: Callable[[torch.Tensor], torch.Tensor],
    outputs: Sequence[tuple[Path, tuple[int, ...]]],
    eval_transform: Callable,
    train_transform: Callable | None,
    views: int,
    seed: int,
    batch_size: int,
    workers: int,
    draft: tuple[int, int] | None,
    desc: str,
    writer: bool = True,
) -> list[np.ndarray]:
    """One pass over every (image, view) item that fills one cache entry per ``outputs`` item.

    ``extract`` returns ``[B, *item_shape]`` for a single output, else ``[B, sum of item sizes]``
    (each output's flattened values side by side, in order), so the frozen part runs once per
    view however many entries it feeds. Under DDP the work is sharded: at each step every rank
    extracts its own batch of items, the batches are all-gathered, and the ``writer`` ranks (one
    per filesystem) store them. No rank needs to see another's files; the others wait at a
    barrier, then memory-map the entries.
    """
    rank, world = distributed.rank(), distributed.world_size()
    sizes = [math.prod(shape) for _, shape in outputs]
    item_shape = outputs[0][1] if len(outputs) == 1 else (sum(sizes),)
    total = len(samples) * (views + 1)
    steps = math.ceil(total / (batch_size * world))
    mine = [i for s in range(steps) for i in _rank_slice(s, rank, batch_size, world, total)]
    dataset = _ViewDataset(samples, hashes, eval_transform, train_transform, views, seed, draft)
    # Sequential over this rank's items: its slices come out one per step, in order; only the
    # trailing steps of the last ranks can be empty.
    loader = DataLoader(
        Subset(dataset, mine),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        shuffle=False,
    )
    tmp_name = f".features.{socket.gethostname()}.{os.getpid()}.npy"
    outs = []
    short = space_problem(outputs[0][0].parent, total * sum(sizes) * 4) if writer else None
    if not distributed.all_true(short is None):  # every rank stops, none waits at a collective
        raise short or MarineLifeError("another machine's disk has no room for the feature cache")
    if writer:
        for folder, shape in outputs:
            folder.mkdir(parents=True, exist_ok=True)
            outs.append(
                np.lib.format.open_memmap(
                    folder / tmp_name, mode="w+", dtype=np.float32,
                    shape=(len(samples), views + 1, *shape),
                )
            )  # fmt: skip
    batches = iter(loader)
    for step in progress(range(steps), total=steps, desc=desc):
        feats = None
        if len(_rank_slice(step, rank, batch_size, world, total)):
            inputs, _ = next(batches)
            feats = extract(inputs).float()
        blocks = distributed.gather_rows(feats, batch_size, item_shape)
        if not outs:
            continue
        for r, block in enumerate(blocks):
            items = _rank_slice(step, r, batch_size, world, total)
            rows, cols = np.divmod(np.arange(items.start, items.stop), views + 1)
            values = block[: len(items)].cpu().numpy()
            if len(outputs) == 1:
                outs[0][rows, cols] = values
                continue
            offset = 0
            for out, size, (_, shape) in zip(outs, sizes, outputs):
                out[rows, cols] = values[:, offset : offset + size].reshape(-1, *shape)
                offset += size
    for out, (folder, shape) in zip(outs, outputs):
        out.flush()
        del out
        data_path = folder / "features.npy"
        os.replace(folder / tmp_name, data_path)
        meta = {
            "shape": [len(samples), views + 1, *shape],
            "sha256": _checksum(data_path),
            "format": CACHE_FORMAT,
        }
        atomic_write_text(folder / "meta.json", json.dumps(meta))
    outs.clear()
    distributed.barrier()  # the entries are complete before anyone reads them
    return [np.load(folder / "features.npy", mmap_mode="r") for folder, _ in outputs]


def space_problem(folder: Path, needed: int) -> MarineLifeError | None:
    """The error naming the folder and the figures when ``needed`` bytes will not fit there."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    margin = 256 * 2**20  # the rest of the run (checkpoints, figures) needs room too
    if needed + margin <= free:
        return None
    return MarineLifeError(
        f"the feature cache needs {needed / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
        "is free there",
        path=folder,
        fix="point MARINELIFE_CACHE at a disk with more room, lower feature_cache_views or "
        "boundary_cache_mb, or train with --no-feature-cache",
    )


def cache_entry_missing(key: str, shape: tuple[int, ...]) -> bool:
    """True when ``key`` has no committed entry of ``shape`` on some machine.

    Reads only ``meta.json`` (written last): the checksum over the data, which reads the whole
    file, runs once, when the entry is loaded; a damaged entry is rebuilt there.
    """
    meta = cache_dir() / key / "meta.json"
    try:
        present = tuple(json.loads(meta.read_text("utf-8"))["shape"]) == tuple(shape)
    except (OSError, ValueError, KeyError, TypeError):
        present = False
    checker = distributed.local_rank() == 0
    return not distributed.all_true(present or not checker)


def cached_features(
    key: str, shape: tuple[int, ...], build: Callable[[Path, bool], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Return the entry for ``key`` (building it when absent or damaged) and whether it was hit.

    ``build(folder, writer)`` computes the entry; ``writer`` says whether this rank stores it.
    Under DDP one rank per machine checks the entry (the checksum reads the whole file), and the
    ranks rebuild together unless every machine has it intact.
    """
    folder = cache_dir() / key
    checker = distributed.local_rank() == 0
    hit = load_entry(folder, shape) if checker else None
    if distributed.all_true(hit is not None or not checker):
        log.info("feature cache hit: %s", folder)
        return (hit if hit is not None else np.load(folder / "features.npy", mmap_mode="r")), True
    writer = distributed.node_writes_cache(folder.parent)
    if writer:
        (folder / "meta.json").unlink(missing_ok=True)
    return build(folder, writer), False


class CachedFeatureDataset(Dataset):
    """Training items from cached features: each epoch draws one view per image."""

    def __init__(self, features: np.ndarray, targets: Sequence[int], *, train: bool):
        self.features = features
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.train = train
        self.view_choice = np.zeros(len(targets), dtype=np.int64)

    def set_epoch_views(self, generator: np.random.Generator) -> None:
        if self.train:
            self.view_choice = generator.integers(0, self.features.shape[1], len(self.targets))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = int(self.view_choice[index]) if self.train else 0
        return torch.from_numpy(np.array(self.features[index, view])), self.targets[index]
