"""Do augmented views pay? The frozen stage with 0, 1, 2 and 4 cached views, on one cache build.

    .venv/bin/python bench/views_accuracy.py --data ../shared/data/sea-animals-full \\
        [--recipe two-stage-lite] [--views 0,1,2,4] [--seeds 3]

View ``v`` of a photo is seeded by (run seed, photo hash, v) alone (``feature_cache.view_seed``),
so a cache built with 4 views holds exactly the views a 1- or 2-view cache would: views 1..k are
its first k columns. One build of the largest count therefore serves every count, and each head
trains exactly as the recipe's frozen stage does (the library's cached stage data, optimiser,
schedule, loss and epoch loop; best epoch by val accuracy), on the clean view plus the first k.
Prints val and test top-1 / macro-F1 per count (mean over ``--seeds`` head seeds), the cache
build time and the build time each count would need (items ∝ k + 1).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.fit.epoch import train_one_epoch, validation_metrics
from marinelife.fit.schedule import build_scheduler
from marinelife.fit.stages import RegularizedLoss, build_optimizer, plan_stages
from marinelife.logutil import setup_logging
from marinelife.models.classifier import configured_head
from marinelife.pipeline.training import build_trainer


def _probs(head: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.inference_mode():
        return torch.softmax(head(torch.from_numpy(np.array(features))), 1).numpy()


def _fit_head(data, config, stage, train, val, test, seed: int) -> dict[str, float]:
    """The recipe's frozen stage on these features; test read at the best val epoch."""
    torch.manual_seed(seed)
    model = data.model
    head = configured_head(config, model.num_features, len(data.class_to_index))
    stage_data = data._cached_data(head, train, val)
    opt = build_optimizer(list(head.named_parameters()), config, stage.lr)
    sched = build_scheduler(opt, epochs=stage.epochs, steps_per_epoch=len(stage_data.train_loader),
                            warmup_epochs=stage.warmup_epochs,
                            min_ratio=config.min_lr_ratio)  # fmt: skip
    loss = RegularizedLoss(config.label_smoothing)
    val_y = np.array([data.class_to_index[s.label] for s in data.val_samples])
    test_y = np.array([data.class_to_index[s.label] for s in data.test_samples])
    best: dict[str, float] = {"val_acc": -1.0}
    for epoch in range(stage.epochs):
        stage_data.on_epoch(seed * 1000 + epoch)
        head.train()
        train_one_epoch(head, stage_data.train_loader, opt, sched, loss,
                        device=torch.device("cpu"), epoch_label=f"{epoch}", global_step=0,
                        show_progress=False)  # fmt: skip
        v = validation_metrics(val_y, _probs(head, val[:, 0]))
        if v["acc"] > best["val_acc"]:
            t = validation_metrics(test_y, _probs(head, test[:, 0]))
            best = {"val_acc": v["acc"], "val_f1": v["f1"], "test_acc": t["acc"],
                    "test_f1": t["f1"], "epoch": epoch + 1}  # fmt: skip
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-full"))
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--views", default="0,1,2,4")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    setup_logging(quiet=True)
    counts = sorted({int(v) for v in args.views.split(",")})
    os.environ.setdefault("MARINELIFE_CACHE", tempfile.mkdtemp(prefix="views-bench-"))
    layout = scan_dataset(args.data)
    config = resolve_config(args.recipe, [*args.overrides, f"feature_cache_views={counts[-1]}"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(layout, config, Path(tmp) / "run")
    data = trainer.data
    data.test_samples = layout.samples("test")
    start = time.perf_counter()
    train = data.features(data.train_samples, views=counts[-1], desc="features train")
    build_s = time.perf_counter() - start
    val = data.features(data.val_samples, views=0, desc="features val")
    test = data.features(data.test_samples, views=0, desc="features test")
    stage = plan_stages(config)[0]
    print(f"# {args.recipe} on {args.data.name}: {len(data.train_samples)} train photos, "
          f"train cache with {counts[-1]} views built in {build_s:.0f} s; "
          f"{stage.epochs} head epochs, {args.seeds} seeds")  # fmt: skip
    print("| views | build (s, ∝ items) | val top-1 | val F1 | test top-1 | test F1 | best epoch |")
    print("|---|---|---|---|---|---|---|")
    for k in counts:
        subset = np.asarray(train[:, : k + 1])  # the clean view and views 1..k
        runs = [_fit_head(data, config, stage, subset, val, test, seed)
                for seed in range(args.seeds)]  # fmt: skip
        mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        spread = float(np.std([r["test_acc"] for r in runs]))
        print(f"| {k} | {build_s * (k + 1) / (counts[-1] + 1):.0f} | {mean['val_acc']:.3f} | "
              f"{mean['val_f1']:.3f} | {mean['test_acc']:.3f} ± {spread:.3f} | "
              f"{mean['test_f1']:.3f} | {mean['epoch']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
