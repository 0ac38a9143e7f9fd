"""A torch Dataset over scanned samples that never crashes mid-epoch on a bad file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from marinelife.data.image_io import load_image_array
from marinelife.data.scan import Sample
from marinelife.errors import ImageDecodeError

log = logging.getLogger(__name__)


class ImageSampleDataset(Dataset):
    """``(tensor, target)`` pairs from :class:`Sample` s through one transform.

    A file that cannot be decoded is logged once, naming it and `marinelife check`, and replaced by
    the next readable sample so an epoch never dies half-way (torchvision's ImageFolder crashes).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        class_to_index: dict[str, int],
        transform: Callable[[np.ndarray], torch.Tensor],
        *,
        draft_size: tuple[int, int] | None = None,
    ):
        self.samples = list(samples)
        self.targets = [class_to_index[s.label] for s in self.samples]
        self.transform = transform
        self.draft_size = draft_size
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        return load_image_array(self.samples[index].path, draft_size=self.draft_size)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``item`` is an index, or ``(index, epoch_seed)`` from :class:`EpochSeedSampler`."""
        index, epoch_seed = item if isinstance(item, tuple) else (item, None)
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            if i in self._bad:
                continue
            try:
                image = self.load(i)
                seeder = getattr(self.transform, "set_random_seed", None)
                if epoch_seed is not None and seeder is not None:
                    seeder((epoch_seed * 1_000_003 + i) & 0x7FFFFFFF)
                return self.transform(image), self.targets[i]
            except ImageDecodeError as exc:
                self._bad.add(i)
                log.warning("skipping unreadable image: %s (run `marinelife check`)", exc)
        raise ImageDecodeError("no readable images in this split", path=self.samples[0].path)


class EpochSeedSampler(Sampler):
    """Tags each index from ``inner`` with the current epoch's seed.

    Augmentation is then seeded per (epoch, item) inside whichever worker loads it, so an epoch is
    reproducible for any worker count, with persistent workers, and after ``--resume``.
    """

    def __init__(self, inner: Sampler):
        self.inner = inner
        self.epoch_seed = 0

    def __iter__(self):
        seed = self.epoch_seed
        return ((index, seed) for index in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def readable_samples(
    samples: Sequence[Sample], *, draft_size: tuple[int, int] | None = None
) -> tuple[list[Sample], list[str]]:
    """(samples that decode, one message per file that does not).

    Evaluation must leave unreadable files out of its numbers rather than let the training
    dataset's substitution count another image twice.
    """

    def ok(sample: Sample) -> str | None:
        try:
            load_image_array(sample.path, draft_size=draft_size)
        except ImageDecodeError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = list(pool.map(ok, samples))
    kept = [s for s, err in zip(samples, errors) if err is None]
    return kept, [err for err in errors if err is not None]
