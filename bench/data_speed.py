"""Throughput (images/s) and peak RSS of `marinelife check` and `marinelife split`.

Runs each command in a fresh child process (so peak RSS is that command's alone) on
sea-animals-dev and on 15,000 generated "noise photos": 288x216 JPEGs (quality 90) of smooth random
colour fields plus grain, 8 classes x 1,875, all distinct, so there are no duplicate groups and the
decode cost is close to the Kaggle photos' (~300x225 JPEG). Generated once into --workdir.

    .venv/bin/python bench/data_speed.py [--dev PATH] [--count 15000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

DEV = Path("/work/shared/data/sea-animals-dev")
CLASSES = 8
SIZE = (288, 216)

CHILD = """
import sys
from pathlib import Path
import marinelife as ml
from marinelife.data.split import run_split
cmd, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if cmd == "check":
    ml.check(src, min_size=32)
else:
    run_split(src, dst, val=0.15, test=0.15, seed=42, mode="copy")
"""


def _write_class(args: tuple[Path, int, int, int]) -> None:
    root, class_index, count, seed = args
    rng = np.random.default_rng([seed, class_index])
    folder = root / f"synthetic noise {class_index}"
    folder.mkdir(parents=True, exist_ok=True)
    w, h = SIZE
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        arr = np.asarray(base.resize((w, h), Image.BICUBIC), dtype=np.float32)
        arr += rng.normal(0, 4, arr.shape).astype(np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        img.save(folder / f"synthetic_noise_{class_index}_{i:05d}.jpg", quality=90)


def make_noise_photos(root: Path, count: int) -> Path:
    """Flat ROOT/CLASS/*.jpg with ``count`` images; reused when already complete."""
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    per_class = count // CLASSES
    jobs = [(root, k, per_class, 0) for k in range(CLASSES)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write_class, jobs))
    marker.write_text("")
    return root


def measure(cmd: str, src: Path, dst: Path, workers: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command in a child process."""
    env = {**os.environ, "MARINELIFE_QUIET": "1", "MARINELIFE_WORKERS": str(workers)}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, cmd, str(src), str(dst)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if cmd == "split" and child.returncode != 0:
        raise SystemExit(f"split failed on {src} (exit {child.returncode})")
    return elapsed, usage.ru_maxrss / 1024


def count_images(root: Path) -> int:
    from marinelife.data.check import discover

    return len(discover(root).images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=DEV)
    parser.add_argument("--count", type=int, default=15_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/marinelife-bench"))
    parser.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    datasets = []
    if args.dev.is_dir():
        datasets.append(("sea-animals-dev (real JPEG)", args.dev))
    started = time.perf_counter()
    noise = make_noise_photos(args.workdir / f"noise-{args.count}", args.count)
    print(f"generated/reused {noise} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    datasets.append((f"noise photos {SIZE[0]}x{SIZE[1]} JPEG", noise))
    print(
        f"marinelife data benchmark, {date.today()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    header = f"{'dataset':30s} {'images':>7s} {'workers':>7s} {'command':>7s} {'seconds':>8s}"
    print(header + f" {'images/s':>9s} {'peak RSS':>9s}")
    for name, root in datasets:
        n = count_images(root)
        for workers in args.workers:
            for cmd in ("check", "split"):
                dst = args.workdir / "split-out"
                shutil.rmtree(dst, ignore_errors=True)
                seconds, rss = measure(cmd, root, dst, workers)
                shutil.rmtree(dst, ignore_errors=True)
                print(
                    f"{name:30s} {n:7,d} {workers:7d} {cmd:>7s} {seconds:8.1f} "
                    f"{n / seconds:9.0f} {rss:6.0f} MiB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
