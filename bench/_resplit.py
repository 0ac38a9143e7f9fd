"""Random re-splits of a train/val/test dataset with the same number of images per class and split.

How typical is a dataset's own test split? Pool every image, deal the split again at random with
the original per-class counts, and measure the same model on each re-split. Used by
``linear_probe.py --resplits`` (frozen features) and ``resplit_accuracy.py`` (whole recipes);
both draw the same sequence of re-splits from the same seed, so their figures pair up.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SPLITS = ("train", "val", "test")


def resplits(
    targets: dict[str, np.ndarray], repeats: int, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """``repeats`` x ``{split: indices into the pooled items}`` (pooled: SPLITS concatenated)."""
    pooled = np.concatenate([targets[s] for s in SPLITS])
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        for label in np.unique(pooled):
            members = rng.permutation(np.flatnonzero(pooled == label))
            n_train = int((targets["train"] == label).sum())
            n_val = int((targets["val"] == label).sum())
            for split, part in zip(SPLITS, np.split(members, [n_train, n_train + n_val])):
                parts[split].append(part)
        yield {s: np.concatenate(parts[s]) for s in SPLITS}
