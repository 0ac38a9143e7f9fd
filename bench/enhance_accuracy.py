"""Does underwater enhancement help? A frozen-feature linear probe per ``enhance`` setting.

For each enhancement (``none``, ``greyworld``, ``clahe``, ``redcomp`` by default; the filters of
``marinelife.data.enhance``, applied through the one preprocessing function exactly as training
and predict apply them), pooled features of one frozen backbone (lite0 by default) are extracted
for the clean and the flipped image of every train/val/test photo. The probe is
``linear_probe.py``'s: a logistic regression on train, C chosen on val, test top-1 with
flip-averaged probabilities, on the dataset's own split and on ``--resplits`` random re-splits
with the same per-class counts (``_resplit.py``; the same re-splits for every enhancement, so the
differences pair up). The cheapest honest measurement: the backbone is not tuned to any
enhancement, so this measures what the filter does to ImageNet features, not what a fine-tuned
network could learn to undo.

    .venv/bin/python bench/enhance_accuracy.py --data ../shared/data/sea-animals-dev --resplits 5

``--limit-per-class 5 --resplits 1`` is a smoke test (seconds of CPU, figures meaningless).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _resplit import SPLITS
from linear_probe import probe, resplit_probes
from marinelife.config import ENHANCE_FILTERS, EnhanceConfig
from marinelife.data.preprocess import (
    PreprocessConfig,
    load_and_preprocess,
    preprocess_config_for_architecture,
)
from marinelife.data.scan import Sample, scan_dataset
from marinelife.models.backbones import create_backbone


def subset(layout, limit: int) -> tuple[dict[str, list[Sample]], dict[str, np.ndarray]]:
    """Samples and targets per split; ``limit > 0`` keeps the first ``limit`` of each class."""
    samples, targets = {}, {}
    for split in SPLITS:
        chosen, seen = [], {}
        for sample, target in zip(layout.samples(split), layout.targets(split)):
            seen[target] = seen.get(target, 0) + 1
            if not limit or seen[target] <= limit:
                chosen.append((sample, target))
        samples[split] = [s for s, _ in chosen]
        targets[split] = np.asarray([t for _, t in chosen])
    return samples, targets


def extract(
    backbone: torch.nn.Module,
    preprocess: PreprocessConfig,
    samples: dict[str, list[Sample]],
    device: torch.device,
    batch: int = 32,
) -> dict[str, np.ndarray]:
    """``{split: [N, 2, F]}`` pooled features of the clean and the flipped view."""
    out = {}
    for split in SPLITS:
        items, feats = samples[split], []
        for i in range(0, len(items), batch):
            x = torch.stack([load_and_preprocess(s.path, preprocess) for s in items[i : i + batch]])
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                feats.append(torch.stack([backbone(x), backbone(x.flip(3))], 1).float().cpu())
        out[split] = torch.cat(feats).numpy()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-dev"))
    parser.add_argument("--arch", default="tf_efficientnet_lite0")
    parser.add_argument(
        "--enhance", action="append", choices=ENHANCE_FILTERS, help="repeatable; default: all"
    )
    parser.add_argument("--resplits", type=int, default=5, help="random re-splits (0: none)")
    parser.add_argument("--limit-per-class", type=int, default=0, help="0: every image")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.enhance or list(ENHANCE_FILTERS)
    device = torch.device(args.device)
    layout = scan_dataset(args.data)
    layout.require_splits(*SPLITS)
    samples, targets = subset(layout, args.limit_per_class)
    counts = {s: len(samples[s]) for s in SPLITS}
    print(f"data={args.data} arch={args.arch} images={counts} resplits={args.resplits}", flush=True)
    backbone = create_backbone(args.arch, pretrained=True).eval().to(device)
    backbone.to(memory_format=torch.channels_last)

    rows = {}
    for name in names:
        preprocess = preprocess_config_for_architecture(args.arch, enhance=EnhanceConfig(name))
        start = time.perf_counter()
        features = extract(backbone, preprocess, samples, device, args.batch)
        seconds = time.perf_counter() - start
        val, test, c = probe(features, targets)
        scores = resplit_probes(features, targets, c, args.resplits) if args.resplits else None
        rows[name] = (val, test, c, scores, seconds)
        spread = ""
        if scores is not None:
            sd = f" sd={scores.std(ddof=1):.4f}" if len(scores) > 1 else ""
            spread = f" resplit_top1 mean={scores.mean():.4f}{sd} n={len(scores)}"
        params = dict(preprocess.enhance.params)
        print(f"RESULT enhance={name} params={params} val_top1={val:.4f} test_top1={test:.4f} "
              f"C={c:g}{spread} extract_s={seconds:.0f}", flush=True)  # fmt: skip

    print("\nenhance    val top1  test top1  re-splits mean ± sd   Δ vs none (paired)")
    base = rows.get("none")
    for name, (val, test, _, scores, _) in rows.items():
        mean = f"{scores.mean():.4f}" if scores is not None else "–"
        sd = f" ± {scores.std(ddof=1):.4f}" if scores is not None and len(scores) > 1 else ""
        delta = ""
        if base is not None and name != "none" and scores is not None:
            diff = scores - base[3]
            delta = f"{diff.mean():+.4f}" + (f" ± {diff.std(ddof=1):.4f}" if len(diff) > 1 else "")
        print(f"{name:<10} {val:8.4f}  {test:9.4f}  {mean + sd:<20}  {delta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
