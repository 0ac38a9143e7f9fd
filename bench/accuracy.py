"""Train a recipe on a dataset and print test top-1, macro-F1, wall time and peak RSS.

.venv/bin/python bench/accuracy.py --data ../shared/data/sea-animals-dev --recipe two-stage-lite
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from marinelife.config import resolve_config
from marinelife.logutil import setup_logging
from marinelife.pipeline.training import train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-dev"))
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    setup_logging(quiet=args.quiet)
    config = resolve_config(args.recipe, args.overrides)
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    run_dir = runs / f"{args.recipe}-{int(time.time())}"
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    metrics = train(args.data, config, run_dir=run_dir)
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT recipe={args.recipe} overrides={args.overrides} "
        f"top1={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} "
        f"wall_s={wall:.0f} peak_rss_mb={rss_mb:.0f} best={metrics.get('best_epoch')} "
        f"run={run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
