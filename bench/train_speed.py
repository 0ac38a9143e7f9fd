"""Training speed on real photos: what the feature cache and the CPU fast path buy.

    .venv/bin/python bench/train_speed.py --data ../shared/data/sea-animals-dev --parts a,b,c

(a) one frozen-stage epoch, cached features vs recomputing the frozen backbone (same process);
(b) the whole recipe, fast path vs slow path (no cache, NCHW) with identical epochs, each in its
    own process (wall time, test top-1, peak RSS);
(c) backbone forward images/s as a fraction of the FLOP ceiling measured by a large matmul;
(tf) with --tf-python (a Python that has `tensorflow-cpu`): the original TensorFlow/Keras
    two-stage pipeline on the same photos (bench/_tf_two_stage.py), a frozen-MobileNetV2 epoch
    and a stage-2 epoch, printed beside part (a) when that ran with the `two-stage` recipe.
(scale) with --scale 6000,20000,60000: the head stage's train feature cache built, cold, for
    training sets of that many photos, each in its own process (bench/_scale.py): seconds per
    1,000 photos and peak RSS, to show the build grows linearly and memory does not.

    .venv/bin/python bench/train_speed.py --data ../shared/data/sea-animals-full \\
        --scale 6000,20000,60000 --set feature_cache_views=0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from marinelife.config import resolve_config
from marinelife.data.preprocess import preprocess_config_for_model
from marinelife.data.scan import scan_dataset
from marinelife.fit.epoch import train_one_epoch
from marinelife.fit.schedule import build_scheduler
from marinelife.fit.stage_data import StageDataBuilder
from marinelife.fit.stages import RegularizedLoss, build_optimizer, plan_stages
from marinelife.logutil import setup_logging
from marinelife.models import build_classifier, frozen_batchnorm_eval, set_trainable


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _epoch(data, config, stage) -> float:
    trainable = [(n, p) for n, p in data.module.named_parameters() if p.requires_grad]
    opt = build_optimizer(trainable, config, stage.lr)
    sched = build_scheduler(opt, epochs=1, steps_per_epoch=len(data.train_loader),
                            warmup_epochs=0, min_ratio=0.01)  # fmt: skip
    if data.on_epoch:
        data.on_epoch(1)
    start = time.perf_counter()
    train_one_epoch(
        data.module, data.train_loader, opt, sched, RegularizedLoss(config.label_smoothing),
        device=torch.device("cpu"), epoch_label="bench", global_step=0,
        prepare_model=data.prepare, channels_last=data.channels_last, show_progress=False,
    )  # fmt: skip
    return time.perf_counter() - start


def part_a(data_dir: Path, recipe: str, overrides: list[str]) -> dict[str, float]:
    layout = scan_dataset(data_dir)
    config = resolve_config(recipe, overrides)
    model = build_classifier(config, len(layout.classes))
    pre = preprocess_config_for_model(model.backbone, input_size=config.input_size)
    stage = plan_stages(config)[0]
    set_trainable(model, train_backbone_fraction=0.0)
    frozen_batchnorm_eval(model)
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["MARINELIFE_CACHE"] = cache
        builder = StageDataBuilder(config=config, model=model, layout=layout, preprocess=pre,
                                   device=torch.device("cpu"))  # fmt: skip
        start = time.perf_counter()
        cached = builder.stage_data(stage)
        build_s = time.perf_counter() - start
        cached_s = min(_epoch(cached, config, stage) for _ in range(3))
    config.feature_cache = False
    uncached = StageDataBuilder(config=config, model=model, layout=layout, preprocess=pre,
                                device=torch.device("cpu")).stage_data(stage)  # fmt: skip
    uncached_s = _epoch(uncached, config, stage)
    n = len(layout.samples("train"))
    print(f"(a) frozen-stage epoch on {n} images, {recipe}: uncached {uncached_s:.1f} s, "
          f"cached {cached_s:.3f} s -> {uncached_s / cached_s:.0f}x faster; one-off cache "
          f"build {build_s:.0f} s ({builder.views} augmented views + clean) = "
          f"{build_s / uncached_s:.1f} uncached epochs; peak RSS {rss_mb():.0f} MB")  # fmt: skip
    return {"uncached_s": uncached_s, "cached_s": cached_s, "build_s": build_s,
            "architecture": config.architecture}  # fmt: skip


def part_tf(data_dir: Path, tf_python: str, ours: dict[str, float] | None) -> None:
    script = str(Path(__file__).with_name("_tf_two_stage.py"))
    # 50 warm-up batches instead of a warm-up epoch: tracing needs a few, a large set's epoch
    # would double the run.
    out = subprocess.run([tf_python, script, str(data_dir), "50"], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"error: {tf_python} {script} failed: {out.stderr.strip().splitlines()[-1:]}")
    tf = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"(tf) {tf['version']}, original two-stage pipeline (MobileNetV2 224 px, batch 16): "
          f"frozen epoch {tf['frozen_epoch_s']:.1f} s ({tf['frozen_train_img_s']:.0f} train "
          f"images/s, {tf['val_img_s']:.0f} val images/s), stage-2 epoch "
          f"{tf['stage2_epoch_s']:.1f} s; 25 + 15 epochs = "
          f"{(25 * tf['frozen_epoch_s'] + 15 * tf['stage2_epoch_s']) / 60:.1f} min without early "
          f"stopping; peak RSS {tf['peak_rss_mb']:.0f} MB")  # fmt: skip
    if ours and ours["architecture"] == "mobilenetv2_100":
        train_s = tf["frozen_train_s"]  # part (a) times the training pass alone, no validation
        print(f"(tf) frozen MobileNetV2 training pass, TensorFlow {train_s:.1f} s vs "
              f"marinelife uncached {ours['uncached_s']:.1f} s "
              f"({train_s / ours['uncached_s']:.1f}x) and cached "
              f"{ours['cached_s']:.2f} s ({train_s / ours['cached_s']:.0f}x; the "
              f"one-off cache build {ours['build_s']:.0f} s = "
              f"{ours['build_s'] / train_s:.1f} TensorFlow passes)")  # fmt: skip


def part_b(data_dir: Path, recipe: str, overrides: list[str]) -> None:
    def run(extra: list[str]) -> dict[str, str]:
        sets = [a for o in overrides + extra for a in ("--set", o)]
        cmd = [sys.executable, str(Path(__file__).with_name("accuracy.py")), "--data",
               str(data_dir), "--recipe", recipe, "--quiet", *sets]  # fmt: skip
        # A fresh cache per run: the fast path pays for building its feature and boundary
        # caches (and both for converting the offline weights), as on a first run.
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            env = {**os.environ, "MARINELIFE_CACHE": cache}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
        return dict(re.findall(r"(\w+)=(\S+)", line))

    fast = run([])
    slow = run(["feature_cache=false", "channels_last=false"])
    ratio = float(slow["wall_s"]) / float(fast["wall_s"])
    print(f"(b) whole {recipe} {overrides}: fast {fast['wall_s']} s top-1 {fast['top1']} "
          f"(peak RSS {fast['peak_rss_mb']} MB) | slow {slow['wall_s']} s top-1 {slow['top1']} "
          f"(peak RSS {slow['peak_rss_mb']} MB) -> {ratio:.1f}x faster")  # fmt: skip


def _gflops(fn, flops: float, repeat: int = 3) -> float:
    fn()
    best = min(_timed(fn) for _ in range(repeat))
    return flops / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def part_c(recipe: str, overrides: list[str]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    n = 4096
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    fp32 = _gflops(lambda: a32 @ b32, 2 * n**3)
    # Without native bf16 (no AVX512-BF16/AMX) the bf16 matmul is emulated and ~100x slower:
    # measure it at a size that finishes.
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    m16 = n if native else 1024
    a16, b16 = torch.randn(m16, m16).bfloat16(), torch.randn(m16, m16).bfloat16()
    bf16 = _gflops(lambda: a16 @ b16, 2 * m16**3, repeat=1 if not native else 3)
    config = resolve_config(recipe, overrides)
    model = build_classifier(config, 23).eval()
    size = preprocess_config_for_model(model.backbone, input_size=config.input_size).input_size
    x = torch.randn(32, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.backbone(x[:1])
    per_image = counter.get_total_flops()
    for layout in ("NCHW", "channels_last"):
        m = model.backbone
        inp = x
        if layout == "channels_last":
            m = m.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            seconds = min(_timed(lambda m=m, inp=inp: m(inp)) for _ in range(3))
        ips = 32 / seconds
        achieved = ips * per_image / 1e9
        print(f"(c) {config.architecture} {size}px {layout}: {ips:.0f} images/s = "
              f"{achieved:.1f} GFLOP/s = {100 * achieved / fp32:.0f}% of the fp32 matmul "
              f"ceiling {fp32:.0f} GFLOP/s (bf16 matmul {bf16:.1f} GFLOP/s, "
              f"{'native' if native else 'emulated'}); "
              f"{per_image / 1e9:.2f} GFLOP/image; peak RSS {rss_mb():.0f} MB")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sea-animals-dev"))
    parser.add_argument("--recipe", default="two-stage-lite")
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tf-python", help="a Python with tensorflow-cpu: adds part (tf)")
    parser.add_argument("--scale", help="training-set sizes for part (scale), e.g. 6000,60000")
    args = parser.parse_args()
    if args.scale:
        from _scale import scale_runs

        return scale_runs(args.data, [int(n) for n in args.scale.split(",")], args.recipe,
                          args.overrides)  # fmt: skip
    setup_logging(quiet=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = args.parts.split(",")
    if "c" in parts:
        part_c(args.recipe, args.overrides)
    ours = None
    if "a" in parts:
        ours = part_a(args.data, args.recipe, args.overrides)
    if "b" in parts:
        part_b(args.data, args.recipe, args.overrides)
    if args.tf_python:
        part_tf(args.data, args.tf_python, ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
