"""Load test of `marinelife serve` on loopback: good uploads at concurrency 16, bad ones mixed in.

Starts the server as its own process (default ONNX Runtime backend) on a free 127.0.0.1 port and
loads it with good requests (one ~300x200 JPEG each, at most ``--concurrency`` in flight) while
``--bad`` malformed ones are mixed in. Reports requests/s, latency p50/p95/p99 of good requests,
status-code counts for good and bad, and the server's RSS and CPU. Traffic goes only to 127.0.0.1.

Two load generators, because client and server share this machine's CPUs:
- ``--client httpx``: Python asyncio, ``--requests`` good + ``--bad`` bad in a shuffled order,
  stopping after ``--max-seconds``. Costs ~10 ms of CPU per request on a 2-core VM, which the
  server then lacks.
- ``--client wrk`` (``apt-get install wrk``; the default when installed): the C load generator
  keeps ``--concurrency`` connections busy for ``--seconds`` (``bench/serve_load.lua``) at a small
  fraction of that CPU, while ``--bad`` bad requests go out one by one over the same period.

    .venv/bin/python bench/serve_load.py [--model RUN_OR_EXPORT] [--client wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from _serving import cpu_seconds, free_port, random_bundle, rss_mb, stop_server

DEV = Path("/work/shared/data/sea-animals-dev")
WRK_SCRIPT = Path(__file__).with_name("serve_load.lua")


def sample_jpeg() -> bytes:
    photos = sorted(DEV.glob("test/*/*.jpg"))[:1]
    if photos:
        img = Image.open(photos[0]).convert("RGB").resize((300, 200))
    else:
        rng = np.random.default_rng(0)
        small = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8))
        img = small.resize((300, 200), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def bad_requests(jpeg: bytes) -> list[dict]:
    return [
        {"files": {"file": ("r.jpg", os.urandom(2048), "image/jpeg")}},
        {"files": {"file": ("t.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")}},
        {"files": {"file": ("e.jpg", b"", "image/jpeg")}},
        {"json": {"file": "not a file"}},
        {"data": {"other": "field"}, "files": {"x": ("x.jpg", jpeg, "image/jpeg")}},
        {"content": b"", "headers": {"content-type": "multipart/form-data"}},
    ]


async def run_load(base: str, args, jpeg: bytes) -> tuple[list, Counter, Counter, float]:
    good = [{"files": {"file": ("p.jpg", jpeg, "image/jpeg")}}] * args.requests
    bad_kinds = bad_requests(jpeg)
    bad = [bad_kinds[i % len(bad_kinds)] for i in range(args.bad)]
    jobs = [(True, g) for g in good] + [(False, b) for b in bad]
    random.Random(0).shuffle(jobs)
    latencies: list[float] = []
    good_codes: Counter = Counter()
    bad_codes: Counter = Counter()
    semaphore = asyncio.Semaphore(args.concurrency)
    deadline = time.monotonic() + args.max_seconds
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one(is_good: bool, kwargs: dict) -> None:
            async with semaphore:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/predict", **kwargs)
                    code = response.status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                if is_good:
                    latencies.append(time.perf_counter() - start)
                    good_codes[code] += 1
                else:
                    bad_codes[code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one(g, kw) for g, kw in jobs))
        elapsed = time.perf_counter() - start
    return latencies, good_codes, bad_codes, elapsed


async def send_bad_spread(base: str, jpeg: bytes, count: int, seconds: float) -> Counter:
    """``count`` bad requests one at a time, evenly over ``seconds`` (mixed into a wrk run)."""
    kinds = bad_requests(jpeg)
    codes: Counter = Counter()
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * seconds / count - time.monotonic()))
            try:
                codes[(await client.post("/v1/predict", **kinds[i % len(kinds)])).status_code] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1
    return codes


async def run_wrk(base: str, args, jpeg: bytes) -> tuple[dict, Counter, Counter, float]:
    """Good load from wrk, bad requests from httpx at the same time; wrk's own percentiles."""
    with tempfile.NamedTemporaryFile(suffix=".jpg") as photo:
        photo.write(jpeg)
        photo.flush()
        wrk = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{args.concurrency}", f"-d{args.seconds:g}s", "--timeout", "60s",
            "-s", str(WRK_SCRIPT), f"{base}/v1/predict",
            env={**os.environ, "JPEG": photo.name},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        bad_task = asyncio.create_task(send_bad_spread(base, jpeg, args.bad, 0.9 * args.seconds))
        out, _ = await wrk.communicate()
        bad_codes = await bad_task
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK ")]
    if wrk.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed (exit {wrk.returncode}):\n{out.decode()}")
    result = json.loads(lines[-1][4:])
    good_codes = Counter({int(code): n for code, n in result["codes"].items()})
    if result["transport_errors"]:
        good_codes["transport error"] += result["transport_errors"]
    percentiles = {q: result[f"p{q}_us"] / 1000 for q in (50, 95, 99)}
    return percentiles, good_codes, bad_codes, result["duration_us"] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="run folder (default: random)")
    parser.add_argument("--arch", default="tf_efficientnet_lite0", help="for the random model")
    parser.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--bad", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=300, help="httpx: time bound")
    parser.add_argument("--workers", type=int, default=1, help="passed to marinelife serve")
    parser.add_argument("--threads", type=int, default=0, help="passed to marinelife serve")
    parser.add_argument("--client", default="auto", choices=("auto", "wrk", "httpx"))
    parser.add_argument("--seconds", type=float, default=30, help="wrk: run length")
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "httpx"
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk, or use --client httpx")
    tmp = tempfile.TemporaryDirectory()
    model = args.model or random_bundle(
        Path(tmp.name), args.arch, [f"class {i}" for i in range(23)]
    )
    port = free_port()
    log = Path(tmp.name) / "serve.log"
    cmd = [sys.executable, "-m", "marinelife", "serve", str(model), "--port", str(port),
           "--backend", args.backend, "--workers", str(args.workers), "--threads",
           str(args.threads)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise SystemExit(log.read_text()) from None
                time.sleep(0.2)
        jpeg = sample_jpeg()
        httpx.post(f"{base}/v1/predict", files={"file": ("w.jpg", jpeg)}, timeout=60)
        rss_before, cpu_before = rss_mb(proc.pid), cpu_seconds(proc.pid)
        if args.client == "wrk":
            latency, good, bad, elapsed = asyncio.run(run_wrk(base, args, jpeg))
            p50, p95, p99 = latency[50], latency[95], latency[99]
        else:
            latencies, good, bad, elapsed = asyncio.run(run_load(base, args, jpeg))
            lat = np.asarray(latencies) * 1000
            p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if len(lat) else (np.nan,) * 3
        rss_after, server_cpu = rss_mb(proc.pid), cpu_seconds(proc.pid) - cpu_before
    finally:
        stop_server(proc, timeout=20)
    done = sum(good.values()) + sum(bad.values())
    print(
        f"# {date.today()}  {os.cpu_count()} CPUs, load {os.getloadavg()}, backend {args.backend}, "
        f"workers {args.workers}, threads {args.threads or 'auto'}, client {args.client}"
    )
    print(f"model: {args.model or f'random {args.arch} (224 px)'}; JPEG {len(jpeg)} bytes")
    print(f"sent {done} requests ({sum(good.values())} good, {sum(bad.values())} bad) in "
          f"{elapsed:.1f} s at concurrency {args.concurrency}")  # fmt: skip
    print(f"good: {sum(good.values()) / elapsed:.1f} images/s, {done / elapsed:.1f} requests/s")
    print(f"latency (good) p50 {p50:.0f} ms  p95 {p95:.0f} ms  p99 {p99:.0f} ms")
    print(f"status codes good: {dict(good)}  bad: {dict(bad)}")
    errors = sum(n for code, n in good.items() if code != 200)
    server_errors = sum(n for code, n in bad.items() if not isinstance(code, int) or code >= 500)
    print(f"errors on good requests: {errors}; 5xx/transport errors on bad: {server_errors}")
    print(f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    # Client and server share the machine: the server's share of the CPU says which one limits.
    cores = os.cpu_count() or 1
    print(f"server CPU: {server_cpu:.1f} s of {elapsed * cores:.1f} core-s "
          f"({100 * server_cpu / (elapsed * cores):.0f} %), "
          f"{1000 * server_cpu / max(1, sum(good.values())):.1f} ms per good image")  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
