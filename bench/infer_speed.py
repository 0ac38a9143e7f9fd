"""CPU inference speed: eager PyTorch (NCHW, channels_last) vs ONNX Runtime fp32 and int8.

For each architecture at 224 px (random weights: speed does not depend on them): batch-1 latency
p50/p95 and batch-32 images/s, plus the share of the machine's fp32 FLOP ceiling that batch-32
reaches, the ceiling measured in the same run (warm-up, then a 4096³ fp32 and bf16 matmul).
int8 is ONNX Runtime static QDQ quantization exactly as `marinelife export --quantize int8` does
it (calibrated here on random inputs; accuracy is measured by `export` on real data). Each
variant is timed in its own process.

    .venv/bin/python bench/infer_speed.py [--arch tf_efficientnet_lite0 mobilenetv2_100]
        [--seconds 4] [--threads 0] [--tf-python /path/to/tf-venv/bin/python] [--traced-pads]

With --tf-python (a Python that has `tensorflow-cpu`, e.g. `python -m venv /tmp/tf &&
/tmp/tf/bin/pip install tensorflow-cpu`), Keras's MobileNetV2 is timed in the same run with the
same protocol (bench/_tf_keras.py), the anchor the original TensorFlow pipeline stands for.
With --traced-pads, each model is also exported the way it was before TensorFlow "SAME" padding
became constant Conv pads (src/marinelife/models/onnx_graph.py) and timed beside the current export.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch

from _timing import measure
from marinelife.config import TrainConfig
from marinelife.fileio import load_weights, save_weights
from marinelife.infer.quantize import quantize_int8
from marinelife.models import build_classifier
from marinelife.models.onnx_export import torch_to_onnx
from marinelife.models.runtime import OnnxBackend, TorchBackend

SIZE = 224
VARIANTS = ("eager NCHW", "eager channels_last", "ORT fp32", "ORT int8")
# --traced-pads: the export as it was before TF "SAME" padding became constant Conv pads.
TRACED = ("ORT fp32 traced pads", "ORT int8 traced pads")
ONNX_FILES = {
    "ORT fp32": "onnx",
    "ORT int8": "int8.onnx",
    TRACED[0]: "traced.onnx",
    TRACED[1]: "traced.int8.onnx",
}


def matmul_gflops(dtype: torch.dtype, n: int = 4096, seconds: float = 3.0) -> float:
    # CPUs without native bf16 (no AVX512-BF16/AMX) emulate it ~50x slower: probe at 1024³ first
    # and stay at that size when a 4096³ product would take more than a few seconds.
    probe = torch.randn(1024, 1024, dtype=dtype)
    start = time.perf_counter()
    torch.mm(probe, probe)
    if (time.perf_counter() - start) * 64 > seconds:
        n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        torch.mm(a, b)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def model_gflop(model: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, SIZE, SIZE))
    return counter.get_total_flops() / 1e9


def _backend(arch: str, variant: str, folder: Path):
    model = build_classifier(TrainConfig(architecture=arch, pretrained=False), 23).eval()
    model.load_state_dict(load_weights(folder / f"{arch}.safetensors"))
    if variant == "eager NCHW":
        return TorchBackend(model, channels_last=False)
    if variant == "eager channels_last":
        return TorchBackend(model, channels_last=True)
    return OnnxBackend(folder / f"{arch}.{ONNX_FILES[variant]}")


def _traced_export(model: torch.nn.Module, path: Path) -> None:
    """The export as it was before "SAME" padding became constant pads (per-call Pad ops)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
            input_names=["input"], output_names=["logits"], opset_version=17,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )  # fmt: skip


def prepare(arch: str, folder: Path, traced_pads: bool) -> float:
    """Weights, fp32 and int8 ONNX files for ``arch`` in ``folder``; returns GFLOP per image."""
    model = build_classifier(TrainConfig(architecture=arch, pretrained=False), 23).eval()
    save_weights(model.state_dict(), folder / f"{arch}.safetensors")
    calibration = np.random.default_rng(1).standard_normal((64, 3, SIZE, SIZE)).astype(np.float32)
    exports = [("ORT fp32", "ORT int8", True)] + ([(*TRACED, False)] if traced_pads else [])
    for fp32_variant, int8_variant, static_pads in exports:
        fp32 = folder / f"{arch}.{ONNX_FILES[fp32_variant]}"
        if static_pads:
            torch_to_onnx(model, SIZE, fp32, opset=17, dynamic_batch=True)
        else:
            _traced_export(model, fp32)
        int8 = folder / f"{arch}.{ONNX_FILES[int8_variant]}"
        quantize_int8(fp32, int8, calibration, dynamic_batch=True)
    return model_gflop(model)


def _report(result: dict, ceiling: float) -> dict:
    result["ceiling_pct"] = 100 * result["gflop"] * result["b32_img_s"] / ceiling
    print(
        f"{result['arch']:22s} {result['variant']:20s} p50 {result['p50_ms']:7.1f} ms  "
        f"p95 {result['p95_ms']:7.1f} ms  b32 {result['b32_img_s']:7.1f} img/s  "
        f"{result['ceiling_pct']:5.1f}% of fp32 peak",
        flush=True,
    )
    return result


def bench_tensorflow(tf_python: str, seconds: float, ceiling: float, gflop: float) -> dict:
    """Keras MobileNetV2 timed by ``tf_python`` (a TensorFlow venv) with the same protocol."""
    script = str(Path(__file__).with_name("_tf_keras.py"))
    out = subprocess.run(
        [tf_python, script, str(SIZE), str(seconds), "23"], capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(f"error: {tf_python} {script} failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(arch="mobilenetv2_100", variant=f"TF {result.pop('version')} Keras", gflop=gflop)
    return _report(result, ceiling)


def bench_arch(
    arch: str, seconds: float, ceiling: float, tmp: Path, threads: int, traced_pads: bool
) -> list[dict]:
    gflop = prepare(arch, tmp, traced_pads)
    rows = []
    for name in VARIANTS + (TRACED if traced_pads else ()):
        # Each variant in a fresh process: ONNX Runtime's and OpenMP's thread pools left alive
        # in one process slow the other down by up to 10x on a 2-core machine.
        child = [sys.executable, __file__, "--child", arch, name, str(tmp), str(seconds)]
        out = subprocess.run(
            [*child, str(threads)], capture_output=True, text=True, check=True
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        result.update(arch=arch, variant=name, gflop=gflop)
        rows.append(_report(result, ceiling))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["tf_efficientnet_lite0", "mobilenetv2_100"])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tf-python", help="a Python with tensorflow-cpu: adds Keras MobileNetV2")
    parser.add_argument(
        "--traced-pads", action="store_true", help="add the exports with per-call SAME padding"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, variant, folder, seconds, threads = args.child
        if int(threads):
            torch.set_num_threads(int(threads))
        backend = _backend(arch, variant, Path(folder))
        print(json.dumps(measure(backend, float(seconds), (3, SIZE, SIZE))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {date.today()}  {platform.processor() or platform.machine()}  {os.cpu_count()} CPUs")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    fp32_peak = matmul_gflops(torch.float32)
    bf16_peak = matmul_gflops(torch.bfloat16)
    print(f"# matmul (4096³; bf16 at 1024³ when emulated): fp32 {fp32_peak:.0f} GFLOP/s, "
          f"bf16 {bf16_peak:.1f} GFLOP/s")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            rows += bench_arch(
                arch, args.seconds, fp32_peak, Path(tmp), args.threads, args.traced_pads
            )
    if args.tf_python:
        gflop = next((r["gflop"] for r in rows if r["arch"] == "mobilenetv2_100"), None)
        if gflop is None:  # the FLOP count is timm's: the two networks are the same
            gflop = model_gflop(
                build_classifier(TrainConfig(architecture="mobilenetv2_100", pretrained=False), 23)
            )
        rows.append(bench_tensorflow(args.tf_python, args.seconds, fp32_peak, gflop))
    print("\n| model | variant | GFLOP/img | b1 p50 ms | b1 p95 ms | b32 img/s | × eager NCHW |"
          " % fp32 peak |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for row in rows:
        base = next(
            (r for r in rows if r["arch"] == row["arch"] and r["variant"] == "eager NCHW"), row
        )
        print(
            f"| {row['arch']} | {row['variant']} | {row['gflop']:.2f} | {row['p50_ms']:.1f} | "
            f"{row['p95_ms']:.1f} | {row['b32_img_s']:.1f} | "
            f"{row['b32_img_s'] / base['b32_img_s']:.2f} | {row['ceiling_pct']:.1f} |"
        )
    keras = next((r for r in rows if r["variant"].startswith("TF ")), None)
    for row in rows:
        if keras and row["arch"] == keras["arch"] and row is not keras:
            print(f"# {row['variant']} / {keras['variant']}: "
                  f"{row['b32_img_s'] / keras['b32_img_s']:.2f}x batch-32 images/s")  # fmt: skip


if __name__ == "__main__":
    main()
