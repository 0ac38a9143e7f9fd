"""Part (scale) of ``train_speed.py``: the train feature-cache build at 6k, 20k, 60k photos.

A training set of N photos is made of links to the source's training photos, round-robin (copy
k of ``x.jpg`` is ``x~k.jpg``), so every copy decodes and augments like a real photo of the set;
the val split is the source's first 10 photos per class (a constant cost). Each size is built
cold in its own process (fresh ``MARINELIFE_CACHE``), the head stage's train entry only
(``finetune_epochs=0``: no boundary activations), and reports the build's seconds, items/s and
peak RSS of the process and of its loader workers.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL_PER_CLASS = 10


def _linked_set(source: Path, photos: int, root: Path) -> Path:
    classes = [sorted(p for p in c.iterdir() if p.is_file()) for c in (source / "train").iterdir()]
    # Interleaved by class, so every size keeps the classes (and roughly their proportions).
    train = [p for row in itertools.zip_longest(*classes) for p in row if p is not None]
    for i in range(photos):
        photo = train[i % len(train)]
        copy = i // len(train)
        folder = root / "train" / photo.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{photo.stem}~{copy}{photo.suffix}").symlink_to(photo.resolve())
    for class_dir in sorted(p for p in (source / "val").iterdir() if p.is_dir()):
        folder = root / "val" / class_dir.name
        folder.mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:VAL_PER_CLASS]:
            (folder / photo.name).symlink_to(photo.resolve())
    return root


def build_once(data: Path, recipe: str, overrides: list[str]) -> dict[str, float]:
    """In this process: scan, hash, then build the train feature cache cold."""
    import torch

    from marinelife.config import resolve_config
    from marinelife.data.preprocess import preprocess_config_for_model
    from marinelife.data.scan import scan_dataset
    from marinelife.fit.stage_data import StageDataBuilder
    from marinelife.logutil import setup_logging
    from marinelife.models import build_classifier, frozen_batchnorm_eval, set_trainable

    setup_logging(quiet=True)
    start = time.perf_counter()
    layout = scan_dataset(data)
    config = resolve_config(recipe, ["finetune_epochs=0", *overrides])
    model = build_classifier(config, len(layout.classes))
    set_trainable(model, train_backbone_fraction=0.0)
    frozen_batchnorm_eval(model)
    pre = preprocess_config_for_model(model.backbone, input_size=config.input_size)
    builder = StageDataBuilder(config=config, model=model, layout=layout, preprocess=pre,
                               device=torch.device("cpu"))  # fmt: skip
    builder._hashes_for(builder.train_samples)
    scanned = time.perf_counter()
    features = builder.features(builder.train_samples, views=builder.views, desc="train")
    built = time.perf_counter()
    return {
        "photos": len(builder.train_samples), "views": builder.views,
        "items": int(features.shape[0] * features.shape[1]),
        "scan_hash_s": scanned - start, "build_s": built - scanned,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }  # fmt: skip


def scale_runs(source: Path, sizes: list[int], recipe: str, overrides: list[str]) -> int:
    rows = []
    for photos in sizes:
        with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
            data = _linked_set(source, photos, Path(tmp) / "data")
            env = {**os.environ, "MARINELIFE_CACHE": str(Path(tmp) / "cache")}
            code = (
                "import json, sys; from pathlib import Path; from _scale import build_once; "
                "print(json.dumps(build_once(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])))"
            )
            out = subprocess.run(
                [sys.executable, "-c", code, str(data), recipe, *overrides], env=env,
                cwd=Path(__file__).parent, check=True, capture_output=True, text=True,
            )  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"(scale) {row['photos']:,} photos x {row['views'] + 1} items: build "
              f"{row['build_s']:.0f} s = {1000 * row['build_s'] / row['photos']:.1f} s per 1,000 "
              f"photos ({row['items'] / row['build_s']:.1f} items/s), scan + hash "
              f"{row['scan_hash_s']:.0f} s, peak RSS {row['rss_mb']:.0f} MB (loader workers "
              f"{row['workers_rss_mb']:.0f} MB)", flush=True)  # fmt: skip
    # The build has a fixed part (ONNX export and check, worker start-up): linear growth shows
    # as a constant marginal cost per photo between sizes.
    for small, large in itertools.pairwise(rows):
        marginal = (large["build_s"] - small["build_s"]) / (large["photos"] - small["photos"])
        print(f"(scale) {small['photos']:,} -> {large['photos']:,} photos: "
              f"{1000 * marginal:.1f} s per 1,000 more photos")  # fmt: skip
    return 0
