"""Would an int8 frozen pass pay? The frozen stage on fp32 vs int8 cached features, side by side.

    .venv/bin/python bench/int8_features.py --data ../shared/data/sea-animals-full \\
        [--recipe two-stage-lite] [--seeds 3] [--views 1]

The recipe's frozen backbone (its pooled features, as the feature cache stores them) is exported
to ONNX and quantized to static int8 the way ``marinelife export --quantize int8`` does it
(QDQ, per-channel, MinMax on 256 clean training views, stem convolution kept in fp32). Two cold
cache builds follow in this process, each in its own cache folder: fp32 ONNX Runtime (what
``feature_engine=auto`` runs today) and the int8 model; each builds train (clean + ``--views``)
and val with the library's own build, fp32 also test. Then the recipe's head trains on each (the
frozen stage of ``views_accuracy.py``: same optimiser, schedule, loss, best epoch by that
engine's val) over ``--seeds`` seeds and is tested on the **fp32** test features: a run whose
caches were built in int8 still evaluates, exports and predicts with the fp32 network. Prints
build items/s and val/test top-1 / macro-F1 for both. The fine-tune stage (trained on boundary
activations of the same pass) is not covered.
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
from marinelife.fit.stages import plan_stages
from marinelife.infer.quantize import quantize_int8
from marinelife.logutil import setup_logging
from marinelife.models.onnx_export import torch_to_onnx
from marinelife.models.onnx_forward import onnx_extract
from marinelife.models.runtime import OnnxBackend
from marinelife.pipeline.training import build_trainer
from views_accuracy import _fit_head

CALIBRATION_IMAGES = 256


class _Pooled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features_pooled(x)


def _int8_extract(data, folder: Path):
    """The frozen pooled-feature pass as a static int8 ONNX Runtime session."""
    pooled = _Pooled(data.model).eval()
    size = data.preprocess.input_size
    fp32, int8 = folder / "pooled.onnx", folder / "pooled-int8.onnx"
    torch_to_onnx(pooled, size, fp32, opset=17, dynamic_batch=True)
    samples = data.train_samples[:: max(1, len(data.train_samples) // CALIBRATION_IMAGES)]
    from marinelife.data.preprocess import load_and_preprocess

    calibration = np.stack([load_and_preprocess(s.path, data.preprocess).numpy()
                            for s in samples[:CALIBRATION_IMAGES]])  # fmt: skip
    quantize_int8(fp32, int8, calibration, dynamic_batch=True)
    backend = OnnxBackend(int8.read_bytes(), threads=data.config.threads)
    return lambda x: torch.from_numpy(backend(x.detach().cpu().numpy()))


def _build(data, views: int, engine) -> tuple[dict[str, np.ndarray], float, int]:
    start = time.perf_counter()
    sets = {
        "train": data.features(data.train_samples, views=views, desc="train", engine=[engine]),
        "val": data.features(data.val_samples, views=0, desc="val", engine=[engine]),
    }
    items = sum(int(np.prod(a.shape[:2])) for a in sets.values())
    return {k: np.asarray(v) for k, v in sets.items()}, time.perf_counter() - start, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-full"))
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    setup_logging(quiet=True)
    layout = scan_dataset(args.data)
    config = resolve_config(args.recipe, [*args.overrides, f"feature_cache_views={args.views}"])
    stage = plan_stages(config)[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        for name in ("fp32", "int8"):
            os.environ["MARINELIFE_CACHE"] = str(Path(tmp) / name)  # cold, and apart
            trainer = build_trainer(layout, config, Path(tmp) / name / "run")
            data = trainer.data
            data.test_samples = layout.samples("test")
            data.model.eval()
            start = time.perf_counter()
            if name == "fp32":
                size = data.preprocess.input_size
                engine = onnx_extract(data.model.forward_features_pooled, data.model, size,
                                      threads=config.threads)  # fmt: skip
            else:
                engine = _int8_extract(data, Path(tmp))
            setup_s = time.perf_counter() - start
            sets, build_s, items = _build(data, args.views, engine)
            if name == "fp32":
                test = np.asarray(data.features(data.test_samples, views=0, desc="test",
                                                engine=[engine]))  # fmt: skip
            sets["test"] = test  # both tested as the run would: through the fp32 network
            runs = [_fit_head(data, config, stage, sets["train"], sets["val"], sets["test"], seed)
                    for seed in range(args.seeds)]  # fmt: skip
            mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
            mean["test_sd"] = float(np.std([r["test_acc"] for r in runs]))
            results[name] = (setup_s, build_s, items, mean, sets["val"][:, 0])
    print(f"# {args.recipe} on {args.data.name}: frozen pooled features, train "
          f"{args.views} view(s) + clean, val, test; {stage.epochs} head epochs, "
          f"{args.seeds} seeds")  # fmt: skip
    print(
        "| frozen pass (train, val) | export (+ quantize) s | build s | items/s | val top-1 | "
        "val F1 | test top-1 (fp32 test) | test F1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (setup_s, build_s, items, m, _) in results.items():
        print(f"| {name} | {setup_s:.0f} | {build_s:.0f} | {items / build_s:.1f} | "
              f"{m['val_acc']:.3f} | {m['val_f1']:.3f} | {m['test_acc']:.3f} ± {m['test_sd']:.3f} "
              f"| {m['test_f1']:.3f} |")  # fmt: skip
    a, b = results["fp32"][4], results["int8"][4]
    cos = float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    print(
        f"int8 vs fp32 val features: mean cosine {cos:.4f}; build "
        f"{results['fp32'][1] / results['int8'][1]:.2f}x faster"
    )


if __name__ == "__main__":
    main()
