"""Survey-scale predict: images/s and peak memory for thousands of photos, ONNX int8 lite0.

Builds a random-init EfficientNet-Lite0 bundle at 224 px (speed does not depend on the weights),
exports it to ONNX int8 exactly as `marinelife export RUN --quantize int8 --data DATA` does
(calibrated on a small generated dataset; the accuracy gate is off: random weights), and
generates folder trees of N photos (640x480 JPEGs by default, under site-*/dive-*/). Then, each
in a fresh process, it times:

* reference: ONNX Runtime batch-32 images/s on a ready tensor, `bench/infer_speed.py`'s
  protocol (`_timing.measure`) on the same int8 file, right before each predict run (so that a
  shared machine's drifting speed hits both alike);
* predict: `write_predictions` (what `marinelife predict MODEL SURVEY --format csv --out DIR`
  runs) over each tree, with decoding in worker threads and, with --pools, worker processes.

Reports images/s (wall time of the predict call, model already loaded), its share of the
reference, and peak RSS: of the predicting process alone (getrusage) and of its whole process
tree (sampled /proc every 50 ms; what process workers add). The targets: RSS at the largest
count within 10 % of the smallest; images/s >= 90 % of the reference.

    .venv/bin/python bench/predict_scale.py [--counts 5000 20000] [--pools thread process]
        [--workers 0] [--batch-size 32] [--photo-size 640 480] [--seconds 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 224
VARIANTS = 64  # distinct JPEGs, written under many names (decoding cost is what matters)


def build_model(folder: Path) -> Path:
    """A random-init lite0 bundle and its int8 export; returns the export's model.onnx."""
    import torch

    import marinelife as ml
    from marinelife.config import TrainConfig
    from marinelife.data.preprocess import preprocess_config_for_model
    from marinelife.data.synthetic import make_synthetic_dataset
    from marinelife.fileio import save_weights
    from marinelife.models import build_classifier
    from marinelife.models.bundle import ModelInfo, head_settings, write_model_json

    data = make_synthetic_dataset(
        folder / "data", num_classes=4, counts={"train": 16, "val": 4, "test": 8}, size=256
    )
    classes = sorted(p.name for p in (data / "train").iterdir())
    torch.manual_seed(0)
    config = TrainConfig(architecture="tf_efficientnet_lite0", pretrained=False)
    model = build_classifier(config, len(classes)).eval()
    run = folder / "run"
    run.mkdir(parents=True)
    save_weights(model.state_dict(), run / "best.safetensors")
    info = ModelInfo(
        architecture=config.architecture,
        classes=classes,
        preprocess=preprocess_config_for_model(model.backbone, input_size=SIZE),
        head=head_settings(config),
    )
    write_model_json(info, run)
    report = ml.export(run, int8=True, data=data, max_drop=100.0)
    return report.path


def make_survey(root: Path, count: int, width: int = 640, height: int = 480) -> Path:
    """``count`` JPEGs (``width`` x ``height``) in site-XX/dive-YY/ folders of 500."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    variants = []
    for _ in range(VARIANTS):
        base = rng.uniform(0, 255, 3) * (1 - ramp) + rng.uniform(0, 255, 3) * ramp
        noise = rng.normal(0, 12, (height, width, 3))
        shape = (height, width, 3)
        pixels = np.clip(np.broadcast_to(base, shape) + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        variants.append(buffer.getvalue())
    for i in range(count):
        folder = root / f"site-{i // 5000:02d}" / f"dive-{i // 500 % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{i:06d}.jpg").write_bytes(variants[i % VARIANTS])
    return root


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(p, 0) for p in tree)


def run_child(args: list[str]) -> dict:
    """Run this script's --child mode; its JSON plus the sampled peak RSS of its tree."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode:
        sys.exit(f"child {args} failed with exit code {process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_mb"] = peak / 2**20
    return result


def child(mode: str, model: str, *rest: str) -> None:
    if mode == "build":  # in a child, so that torch's export memory never inflates the parent
        print(json.dumps({"model": str(build_model(Path(model)))}))
        return
    if mode == "reference":
        from _timing import measure
        from marinelife.models.runtime import OnnxBackend

        result = measure(OnnxBackend(Path(model)), float(rest[0]), (3, SIZE, SIZE))
    else:
        from marinelife.infer.predict_cli import write_predictions
        from marinelife.infer.predictor import Predictor

        survey, out, pool, workers, batch = rest
        predictor = Predictor.load(model)
        sink = io.StringIO()
        start = time.perf_counter()
        code = write_predictions(
            predictor, [survey], fmt="csv", out_dir=Path(out), batch_size=int(batch),
            workers=int(workers), pool=pool, out=sink, err=sys.stderr,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        with open(Path(out) / "predictions.csv") as handle:
            images = sum(1 for _ in handle) - 1
        result = {"seconds": seconds, "images": images, "img_s": images / seconds, "code": code}
    result["self_peak_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _peak_rss_mb() -> float:
    """This process's high-water RSS since exec (VmHWM; getrusage's ru_maxrss would include the
    parent's RSS at fork time)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--pools", nargs="+", default=["thread", "process"],
                        choices=("thread", "process"))  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="decoders (0: automatic)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photo-size", type=int, nargs=2, default=[640, 480],
                        metavar=("W", "H"), help="generated JPEG size")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=4.0, help="reference timing length")
    parser.add_argument("--keep", type=Path, default=None, help="work here, and keep it")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"# {date.today()}  {platform.processor() or platform.machine()}  {os.cpu_count()} CPUs"
          f"  load {os.getloadavg()}")  # fmt: skip
    work = args.keep or Path(tempfile.mkdtemp(prefix="marinelife-predict-scale-"))
    try:
        model = run_child(["build", str(work / "model")])["model"]
        rows = []
        for count in args.counts:
            survey = make_survey(work / f"survey-{count}", count, *args.photo_size)
            for pool in args.pools:
                out = work / f"out-{count}-{pool}"
                shutil.rmtree(out, ignore_errors=True)
                # The reference right before each run: on a shared machine the speed drifts.
                reference = run_child(["reference", str(model), str(args.seconds)])
                result = run_child(["predict", str(model), str(survey), str(out), pool,
                                    str(args.workers), str(args.batch_size)])  # fmt: skip
                result.update(count=count, pool=pool, reference=reference["b32_img_s"])
                result["of_reference"] = result["img_s"] / reference["b32_img_s"]
                rows.append(result)
                print(f"{count:>7} photos  {pool:7s}  {result['img_s']:7.1f} img/s "
                      f"({100 * result['of_reference']:5.1f} % of {reference['b32_img_s']:.1f}, "
                      f"the reference just before)  peak RSS {result['self_peak_mb']:6.0f} MB "
                      f"(tree {result['tree_peak_mb']:6.0f} MB)", flush=True)  # fmt: skip
            if args.keep is None:
                shutil.rmtree(survey)
        print("\n| photos | decoders | images/s | reference img/s | % of reference | peak RSS MB |"
              " tree peak RSS MB |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for r in rows:
            print(f"| {r['count']} | {r['pool']} | {r['img_s']:.1f} | {r['reference']:.1f} | "
                  f"{100 * r['of_reference']:.1f} | {r['self_peak_mb']:.0f} | "
                  f"{r['tree_peak_mb']:.0f} |")  # fmt: skip
        for pool in args.pools:
            mine = [r for r in rows if r["pool"] == pool]
            if len(mine) >= 2:
                growth = mine[-1]["self_peak_mb"] / mine[0]["self_peak_mb"] - 1
                print(f"# {pool}: RSS {mine[-1]['count']} vs {mine[0]['count']} photos: "
                      f"{100 * growth:+.1f} % (target within 10 %); images/s "
                      f"{100 * min(r['of_reference'] for r in mine):.1f} % of reference at "
                      "worst (target >= 90 %)")  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
