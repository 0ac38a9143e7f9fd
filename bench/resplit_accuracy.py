"""A whole recipe on random re-splits of a dataset: how typical is its own test split?

Pools every image of ``--data`` (train/val/test), deals ``--resplits`` new splits with the same
number of images per class and split (``_resplit.py``; the same sequence as
``linear_probe.py --resplits``, so the figures pair up), lays each out as a folder of symbolic
links in a temporary directory (the photos are never copied or changed), trains the recipe on it
and prints each re-split's test top-1 and macro-F1 beside their mean and spread.

    .venv/bin/python bench/resplit_accuracy.py --data ../shared/data/sea-animals-dev \\
        --recipe two-stage-lite --resplits 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _resplit import SPLITS, resplits
from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.logutil import setup_logging
from marinelife.pipeline.training import train


def link_split(root: Path, samples: list, chosen: dict[str, np.ndarray]) -> Path:
    """``root/{split}/{class}/{file}`` symbolic links to the pooled ``samples``."""
    for split, indices in chosen.items():
        for i in indices:
            sample = samples[i]
            target = root / split / sample.label / Path(sample.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(sample.path).resolve())
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-dev"))
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--resplits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="of the re-split sequence")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    setup_logging(quiet=args.quiet)
    layout = scan_dataset(args.data)
    layout.require_splits(*SPLITS)
    samples = [s for split in SPLITS for s in layout.samples(split)]
    targets = {split: np.asarray(layout.targets(split)) for split in SPLITS}
    work = tempfile.TemporaryDirectory(prefix="resplit-")
    scores = []
    for r, chosen in enumerate(resplits(targets, args.resplits, seed=args.seed)):
        data = link_split(Path(work.name) / f"split{r}", samples, chosen)
        config = resolve_config(args.recipe, args.overrides)
        run_dir = Path(work.name) / f"run{r}"
        run_dir.mkdir()
        start = time.perf_counter()
        metrics = train(data, config, run_dir=run_dir)
        scores.append((metrics["accuracy"], metrics["macro_f1"]))
        print(f"RESPLIT {r} recipe={args.recipe} overrides={args.overrides} "
              f"top1={scores[-1][0]:.4f} macro_f1={scores[-1][1]:.4f} "
              f"wall_s={time.perf_counter() - start:.0f}", flush=True)  # fmt: skip
    top1 = np.asarray([s[0] for s in scores])
    spread = f"sd={top1.std(ddof=1):.3f} " if len(top1) > 1 else ""
    print(f"RESULT recipe={args.recipe} resplits={len(top1)} top1 mean={top1.mean():.4f} "
          f"{spread}min={top1.min():.4f} max={top1.max():.4f}")  # fmt: skip
    work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
