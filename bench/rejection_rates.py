"""How often a calibrated model answers "unknown": in-distribution test photos vs other pictures.

In-distribution: the ``test`` split of ``--data``. Out-of-distribution: non-marine photos that ship
with Debian's ``darknet`` package (dog, eagle, giraffe, ...) and scikit-image's sample images
(astronaut, coffee, cat, rocket, textures, ...), plus generated textures (uniform noise, smooth
colour fields, checkerboards, stripes) and marinelife's synthetic shapes. Reports the unknown
rate of each group for both scores at the thresholds stored in model.json, and each score's AUROC.

    .venv/bin/python bench/rejection_rates.py --model RUN --data data/sea-animals
"""

from __future__ import annotations

import argparse
import io
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from marinelife.data.scan import scan_dataset
from marinelife.infer.predictor import Predictor
from marinelife.infer.rejection import rejection_scores

DARKNET = Path("/usr/share/darknet/data")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def photos() -> list[bytes]:
    import skimage.data

    found = [p.read_bytes() for p in sorted(DARKNET.glob("*.jpg"))]
    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "horse",
             "hubble_deep_field", "immunohistochemistry", "logo", "page", "text", "clock",
             "brick", "grass", "gravel", "cell", "colorwheel"]  # fmt: skip
    for name in names:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        found.append(_png(image[..., :3] if image.ndim == 3 else image))
    return found


def textures(count: int = 160) -> list[bytes]:
    from marinelife.data.synthetic import SHAPES, draw_shape

    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            image = rng.integers(0, 256, (240, 320, 3))
        elif kind == 1:
            small = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
            image = np.asarray(small.resize((320, 240), Image.Resampling.BICUBIC))
        elif kind == 2:
            cell = int(rng.integers(8, 48))
            yy, xx = np.mgrid[:240, :320]
            mask = ((yy // cell + xx // cell) % 2)[..., None]
            image = np.where(mask, rng.integers(0, 256, 3), rng.integers(0, 256, 3))
        elif kind == 3:
            period = rng.uniform(6, 40)
            xx = np.arange(320)[None, :, None]
            image = np.broadcast_to(
                127 + 120 * np.sin(xx / period + rng.uniform(0, 6)), (240, 320, 3)
            )
            image = image * rng.uniform(0.3, 1.0, 3)
        else:
            image = np.asarray(draw_shape(SHAPES[i % len(SHAPES)], 224, rng))
        out.append(_png(np.asarray(image)))
    return out


def logits_of(predictor: Predictor, sources: list) -> np.ndarray:
    chunks = []
    for i in range(0, len(sources), 32):
        batch = np.stack([predictor.preprocess(s) for s in sources[i : i + 32]])
        chunks.append(predictor.logits(batch))
    return np.concatenate(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    predictor = Predictor.load(args.model, backend=args.backend)
    rejection = predictor.info.rejection
    if not rejection:
        raise SystemExit("model.json has no rejection field: run ensure_rejection first")
    layout = scan_dataset(args.data)
    groups = {
        "in-distribution (test split)": [s.path for s in layout.samples("test")],
        "non-marine photos": photos(),
        "generated textures": textures(),
    }
    scores = {name: rejection_scores(logits_of(predictor, items)) for name, items in groups.items()}
    thresholds = {"max_softmax": rejection["threshold"], "energy": rejection["energy_threshold"]}
    print(f"# {date.today()}  model {args.model} ({predictor.info.architecture}), "
          f"TPR {rejection['tpr']} on {rejection.get('num_images', '?')} val images")  # fmt: skip
    print("| images | count | unknown (max-softmax) | unknown (energy) |\n|---|---|---|---|")
    for name, s in scores.items():
        rates = {k: 100 * float((s[k] < t).mean()) for k, t in thresholds.items()}
        print(
            f"| {name} | {len(s['energy'])} | {rates['max_softmax']:.1f}% "
            f"| {rates['energy']:.1f}% |"
        )
    ind = scores["in-distribution (test split)"]
    ood = {
        k: np.concatenate([scores[n][k] for n in groups if not n.startswith("in-")])
        for k in thresholds
    }
    for key in thresholds:
        labels = np.r_[np.ones(len(ind[key])), np.zeros(len(ood[key]))]
        auroc = roc_auc_score(labels, np.r_[ind[key], ood[key]])
        print(f"AUROC in- vs out-of-distribution, {key}: {auroc:.3f}")


if __name__ == "__main__":
    main()
