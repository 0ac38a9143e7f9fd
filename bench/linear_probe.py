"""What frozen ImageNet features alone can do on a dataset: the ceiling of a frozen-backbone stage.

For each backbone (offline weights work), pooled features of the clean and the horizontally
flipped image are extracted once for train/val/test; a scikit-learn logistic regression is fitted
on train (both views), its C chosen on val, and test top-1 is printed with flip-averaged
probabilities. Several ``--arch`` values are also probed concatenated.

``--resplits R`` then asks how typical the dataset's own test split is: all images are pooled
and split R more times at random with the same per-class train/val/test counts; each re-split
fits the same probe (C as chosen on the original split) and reports its test top-1, so the
original test figure can be read against the spread a different random split would have given.

    .venv/bin/python bench/linear_probe.py --data ../shared/data/sea-animals-dev \\
        --arch tf_efficientnet_lite0 --arch tf_efficientnet_lite1 --arch tf_efficientnet_lite2
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from _resplit import SPLITS, resplits
from marinelife.data.preprocess import load_and_preprocess, preprocess_config_for_architecture
from marinelife.data.scan import scan_dataset
from marinelife.models.backbones import create_backbone

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def extract(arch: str, layout, batch: int = 32) -> dict[str, np.ndarray]:
    """``{split: [N, 2, F]}`` pooled features of the clean and the flipped view."""
    preprocess = preprocess_config_for_architecture(arch)
    backbone = create_backbone(arch, pretrained=True).eval()
    backbone.to(memory_format=torch.channels_last)
    out = {}
    for split in SPLITS:
        samples, feats, start = layout.samples(split), [], time.perf_counter()
        for i in range(0, len(samples), batch):
            x = torch.stack(
                [load_and_preprocess(s.path, preprocess) for s in samples[i : i + batch]]
            )
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                feats.append(torch.stack([backbone(x), backbone(x.flip(3))], 1).numpy())
        out[split] = np.concatenate(feats)
        seconds = time.perf_counter() - start
        print(f"  {arch} {split}: {len(samples)} images, {seconds:.0f} s", flush=True)
    return out


def probe(
    features: dict[str, np.ndarray], targets: dict[str, np.ndarray], grid=C_GRID
) -> tuple[float, float, float]:
    """(val top-1, test top-1, C) of the logistic regression whose C is best on val."""
    train = features["train"]
    x_train = np.concatenate([train[:, 0], train[:, 1]])
    y_train = np.concatenate([targets["train"], targets["train"]])
    scaler = StandardScaler().fit(x_train)

    def accuracy(model, split: str) -> float:
        views = features[split]
        probs = sum(model.predict_proba(scaler.transform(views[:, v])) for v in (0, 1))
        return float((probs.argmax(1) == targets[split]).mean())

    best = (-1.0, 0.0, 0.0)
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x_train), y_train)
        val = accuracy(model, "val") if len(grid) > 1 else float("nan")
        if len(grid) == 1 or val > best[0]:  # chosen on val alone; test read for that C only
            best = (val, accuracy(model, "test"), c)
    return best


def resplit_probes(
    features: dict[str, np.ndarray], targets: dict[str, np.ndarray], c: float, repeats: int
) -> np.ndarray:
    """Test top-1 of the probe on ``repeats`` random re-splits with the original class counts."""
    pooled_x = np.concatenate([features[s] for s in SPLITS])
    pooled_y = np.concatenate([targets[s] for s in SPLITS])
    scores = []
    for chosen in resplits(targets, repeats):
        feats = {s: pooled_x[i] for s, i in chosen.items()}
        labels = {s: pooled_y[i] for s, i in chosen.items()}
        scores.append(probe(feats, labels, grid=(c,))[1])
    return np.asarray(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-dev"))
    parser.add_argument("--arch", action="append", default=[])
    parser.add_argument("--resplits", type=int, default=0, help="random re-splits to compare")
    args = parser.parse_args()
    archs = args.arch or ["tf_efficientnet_lite0"]
    layout = scan_dataset(args.data)
    layout.require_splits(*SPLITS)
    targets = {split: np.asarray(layout.targets(split)) for split in SPLITS}
    features = {arch: extract(arch, layout) for arch in archs}
    for size in range(1, len(archs) + 1):
        for combo in itertools.combinations(archs, size):
            joined = {s: np.concatenate([features[a][s] for a in combo], -1) for s in SPLITS}
            val, test, c = probe(joined, targets)
            print(f"RESULT {'+'.join(combo)} dim={joined['train'].shape[-1]} "
                  f"val_top1={val:.3f} test_top1={test:.3f} C={c:g}", flush=True)  # fmt: skip
            if args.resplits:
                scores = resplit_probes(joined, targets, c, args.resplits)
                below = float((scores < test).mean())
                print(f"RESPLITS {'+'.join(combo)} n={len(scores)} test_top1 "
                      f"mean={scores.mean():.3f} sd={scores.std(ddof=1):.3f} "
                      f"min={scores.min():.3f} max={scores.max():.3f}; the dataset's own "
                      f"test split ({test:.3f}) beats {below:.0%} of them")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
