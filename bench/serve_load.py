"""Load test of `marinelife serve` on loopback: good uploads at concurrency 16, bad ones mixed in.

Starts the server as its own process (default ONNX Runtime backend) on a free 127.0.0.1 port,
sends ``--requests`` good requests (one ~300x200 JPEG each) and ``--bad`` malformed ones in a
shuffled order, at most ``--concurrency`` in flight, stopping new requests after ``--max-seconds``.
Reports requests/s, latency p50/p95/p99 of good requests, status-code counts for good and bad,
and the server's RSS before and after. Traffic goes only to 127.0.0.1.

    .venv/bin/python bench/serve_load.py [--model RUN] [--requests 2000] [--bad 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="run folder (default: random)")
    parser.add_argument("--arch", default="tf_efficientnet_lite0", help="for the random model")
    parser.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--bad", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    model = args.model or random_bundle(
        Path(tmp.name), args.arch, [f"class {i}" for i in range(23)]
    )
    port = free_port()
    log = Path(tmp.name) / "serve.log"
    cmd = [sys.executable, "-m", "marinelife", "serve", str(model), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--backend", args.backend], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
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
        latencies, good, bad, elapsed = asyncio.run(run_load(base, args, jpeg))
        rss_after, server_cpu = rss_mb(proc.pid), cpu_seconds(proc.pid) - cpu_before
    finally:
        stop_server(proc, timeout=20)
    lat = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if len(lat) else (np.nan,) * 3
    done = sum(good.values()) + sum(bad.values())
    print(
        f"# {date.today()}  {os.cpu_count()} CPUs, load {os.getloadavg()}, backend {args.backend}"
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
