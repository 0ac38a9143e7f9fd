"""Feature-cache build speed beside the frozen model's own ONNX Runtime speed, in one run.

    .venv/bin/python bench/cache_build_speed.py [--data ../shared/data/sea-animals-full]
        [--images 512] [--views 4] [--arch tf_efficientnet_lite0] [--workers -1]

Prints, for the same photos and views: (1) ORT images/s on ready tensors (batch 32, the build's
batch), (2) the view pipeline alone (decode → augment → tensor, through the build's DataLoader),
with the decoded photo reused for its views and without, (4) where a photo's CPU time goes, step
by step in one thread, (3) the whole cache build (ONNX Runtime extraction). The build's share of
(1) is the issue's "≥ 90 % of the model's speed" figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.fit import feature_cache as fc
from marinelife.fit.stage_data import auto_workers
from marinelife.pipeline.training import build_trainer


class _DecodePerView(fc._ViewDataset):
    """The view dataset as it was: every view decodes its photo again (for the comparison)."""

    def _decoded(self, i: int):
        self._last = None
        return super()._decoded(i)


def _breakdown(samples, data, views: int) -> None:
    """Single-threaded ms per photo of each step of the view pipeline: where the CPU goes."""
    from marinelife.data.image_io import load_image_array
    from marinelife.data.preprocess import to_normalised_tensor
    from marinelife.data.transforms import TrainTransform

    train = data.train_transform
    steps = {"decode (draft)": 0.0, "clean view (resize+crop+normalise)": 0.0,
             "resize + filters, once per photo": 0.0, f"augment x{views}": 0.0,
             f"normalise x{views}": 0.0}  # fmt: skip
    names = list(steps)
    for sample in samples:
        t0 = time.perf_counter()
        image = load_image_array(sample.path, draft_size=data.draft)
        t1 = time.perf_counter()
        data.eval_transform(image)
        t2 = time.perf_counter()
        steps[names[0]] += t1 - t0
        steps[names[1]] += t2 - t1
        if not isinstance(train, TrainTransform):
            continue
        t3 = time.perf_counter()
        prepared = train._prepared(image)
        steps[names[2]] += time.perf_counter() - t3
        for _ in range(views):
            t4 = time.perf_counter()
            array = train.pipeline(image=prepared)["image"]
            t5 = time.perf_counter()
            to_normalised_tensor(array, train.config.mean, train.config.std)
            steps[names[3]] += t5 - t4
            steps[names[4]] += time.perf_counter() - t5
    for name, seconds in steps.items():
        print(f"(4) {name:38s} {1000 * seconds / len(samples):6.2f} ms per photo")


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:7.1f} items/s ({seconds:6.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-full"))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--workers", type=int, default=-1, help="-1: what training picks")
    args = parser.parse_args()
    os.environ["MARINELIFE_CACHE"] = tempfile.mkdtemp(prefix="cache-bench-")
    layout = scan_dataset(args.data)
    config = resolve_config(args.recipe, [f"feature_cache_views={args.views}",
                                          f"workers={args.workers}"])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(layout, config, Path(tmp) / "run")
    data = trainer.data
    samples = data.train_samples[:: max(1, len(data.train_samples) // args.images)][: args.images]
    items = len(samples) * (args.views + 1)
    batch = max(32, config.batch_size)
    workers = auto_workers(config, items)
    print(f"# {len(samples)} photos x {args.views + 1} views = {items} items, batch {batch}, "
          f"{workers} loader workers, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip

    extract = data._onnx_extract(trainer.model.forward_features_pooled)
    if extract is None:
        sys.exit("ONNX Runtime extraction is not available for this model")
    size = data.preprocess.input_size
    x = torch.randn(batch, 3, size, size)
    extract(x)  # warm-up
    start = time.perf_counter()
    for _ in range(max(1, items // batch)):
        extract(x)
    model_s = time.perf_counter() - start
    model_rate = max(1, items // batch) * batch / model_s
    print(f"(1) ORT on ready tensors        {_rate(max(1, items // batch) * batch, model_s)}")

    hashes = data._hashes_for(samples)
    for reuse in (False, True):
        kind = fc._ViewDataset if reuse else _DecodePerView
        dataset = kind(samples, hashes, data.eval_transform, data.train_transform,
                       args.views, config.seed, data.draft)  # fmt: skip
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                            collate_fn=fc._collate)  # fmt: skip
        start = time.perf_counter()
        for _ in loader:
            pass
        label = "decoded once per photo" if reuse else "decoded once per view "
        print(f"(2) views only, {label}  {_rate(items, time.perf_counter() - start)}")

    _breakdown(samples, data, args.views)
    start = time.perf_counter()
    data.features(samples, views=args.views, desc="bench")
    build_s = time.perf_counter() - start
    print(
        f"(3) whole cache build            {_rate(items, build_s)}  = "
        f"{100 * items / build_s / model_rate:.0f} % of (1)"
    )


if __name__ == "__main__":
    main()
