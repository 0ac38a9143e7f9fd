"""Both caches of two-stage-lite (head features, then the fine-tune boundary) built cold on a
subset of real photos: the whole frozen work of a cached run, timed by stage.

    .venv/bin/python bench/cache_pass_speed.py [--data ../shared/data/sea-animals-full]
        [--photos 1000]

Run it once per code version to compare (e.g. PYTHONPATH=OLD/src for an older checkout).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-full"))
    parser.add_argument("--photos", type=int, default=1000)
    args = parser.parse_args()
    os.environ["MARINELIFE_CACHE"] = tempfile.mkdtemp(prefix="pass-bench-")
    try:
        from marinelife.fit.stages import plan_stages
        from marinelife.pipeline.training import build_trainer
    except ImportError:  # checkouts before the pipeline/ and fit/ packages
        from marinelife.train.run import build_trainer
        from marinelife.train.stages import plan_stages
    layout = scan_dataset(args.data)
    step = max(1, len(layout.splits["train"]) // args.photos)
    train = layout.splits["train"][::step][: args.photos]
    val = layout.splits["val"][:: step * 3][: args.photos // 3]
    layout = replace(layout, splits={"train": train, "val": val})
    config = resolve_config("two-stage-lite")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(layout, config, Path(tmp) / "run")
        head, finetune = plan_stages(config)[:2]
        start = time.perf_counter()
        trainer.data.stage_data(head)
        mid = time.perf_counter()
        trainer.data.stage_data(finetune)
        end = time.perf_counter()
    items = len(train) * (trainer.data.views + 1) + len(val)
    print(f"{len(train)} train + {len(val)} val photos, {items} items per cache: head stage "
          f"{mid - start:.1f} s, fine-tune stage {end - mid:.1f} s, both {end - start:.1f} s "
          f"({items / (end - start):.1f} items/s)")  # fmt: skip


if __name__ == "__main__":
    main()
