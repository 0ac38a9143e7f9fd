"""Soak `marinelife serve` with good, malformed, oversized and concurrent requests for a fixed time.

Starts the server as its own process on a free 127.0.0.1 port (traffic never leaves loopback),
then keeps ``--concurrency`` clients busy for ``--seconds`` with a fixed mix: good uploads of every
format (and edge images: 1x1, a 1x2,000,000 strip, 16-bit, CMYK, animated GIF), truncated and
random bytes, a text file and a PDF posing as images, a decompression bomb, empty files, too many
files, bodies over the limit (declared and chunked without a length), a non-multipart body, wrong
paths and methods. Every answer must be the expected status; any 5xx or connection failure fails
the run. Reports counts per kind, latency of good requests, health at the end, and the server's
RSS after warm-up and at the end (growth bounded by ``--max-rss-growth-mb``).

    .venv/bin/python bench/serve_soak.py [--model RUN] [--seconds 60] [--concurrency 8]
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
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from _serving import free_port, random_bundle, rss_mb, stop_server

CLASSES = ["synthetic crab", "synthetic eel", "synthetic ray", "synthetic seal"]
MAX_UPLOAD_MB = 2
MAX_FILES = 4


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def payloads() -> dict[str, tuple[list[tuple[str, bytes]] | bytes | None, tuple[int, ...]]]:
    """kind → (files, or a raw body, or None; the statuses that are correct for it)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize(
        (300, 200), Image.Resampling.BICUBIC
    )
    jpeg = encode(photo, "JPEG", quality=90)
    good = {
        "jpeg": jpeg,
        "png": encode(photo, "PNG"),
        "webp": encode(photo, "WEBP"),
        "gif-animated": encode(
            photo.convert("P"), "GIF", save_all=True, append_images=[photo.rotate(90).convert("P")]
        ),  # fmt: skip
        "tiff": encode(photo, "TIFF"),
        "bmp": encode(photo, "BMP"),
        "cmyk-jpeg": encode(photo.convert("CMYK"), "JPEG"),
        "16-bit-png": encode(Image.fromarray(np.full((50, 70), 40000, dtype=np.uint16)), "PNG"),
        "1x1": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "strip-1x2000000": encode(Image.new("RGB", (2_000_000, 1), (10, 200, 10)), "PNG"),
    }
    kinds: dict = {f"good {k}": ([("file", (f"x.{k}", v))], (200,)) for k, v in good.items()}
    kinds["good 4 files"] = ([("file", (f"{i}.jpg", jpeg)) for i in range(MAX_FILES)], (200,))
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # 144 MP in a few kB
    bad = {
        "truncated jpeg": (jpeg[: len(jpeg) // 3], (422,)),
        "random bytes": (rng.bytes(5000), (415, 422)),
        "text as .jpg": (b"hello, this is not a photo\n" * 20, (415, 422)),
        "pdf as .jpg": (b"%PDF-1.4\n" + rng.bytes(3000), (415, 422)),
        "flipped header": (bytes([jpeg[0] ^ 0xFF]) + jpeg[1:], (415, 422)),
        "empty file": (b"", (422,)),
        "pixel bomb": (bomb, (422,)),
    }
    for name, (data, ok) in bad.items():
        kinds[f"bad {name}"] = ([("file", ("x.jpg", data))], ok)
    # Past the count: the first MAX_FILES are classified, the rest named in the results (200).
    kinds["bad too many files"] = ([("file", (f"{i}.jpg", jpeg)) for i in range(MAX_FILES + 1)],
                                   (200,))  # fmt: skip
    oversized = rng.bytes(int((MAX_UPLOAD_MB + 0.5) * 1024 * 1024))
    kinds["bad oversized (declared)"] = ([("file", ("big.jpg", oversized))], (413,))
    # A well-formed multipart body streamed without Content-Length: only counting the bytes as
    # they arrive can stop it.
    part = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    kinds["bad oversized (chunked)"] = (part + oversized + b"\r\n--x--\r\n", (413,))
    kinds["bad not multipart"] = (b'{"image": "not this way"}', (415, 422))
    kinds["bad no file field"] = (None, (422,))
    kinds["bad wrong path"] = (None, (404,))
    kinds["bad wrong method"] = (None, (405,))
    return kinds


async def send(client: httpx.AsyncClient, kind: str, body) -> int:
    url = "/v1/predict"
    if kind == "bad wrong path":
        return (await client.get("/v1/nothing-here")).status_code
    if kind == "bad wrong method":
        return (await client.delete(url)).status_code
    if kind == "bad no file field":
        return (await client.post(url, data={"note": "no file"}, files={"other": b"x"})).status_code
    if kind == "bad not multipart":
        headers = {"content-type": "application/json"}
        return (await client.post(url, content=body, headers=headers)).status_code
    if kind == "bad oversized (chunked)":

        async def chunks():
            for start in range(0, len(body), 256 * 1024):
                yield body[start : start + 256 * 1024]

        headers = {"content-type": "multipart/form-data; boundary=x"}
        return (await client.post(url, content=chunks(), headers=headers)).status_code
    return (await client.post(url, files=body)).status_code


async def soak(base: str, seconds: float, concurrency: int, seed: int):
    kinds = payloads()
    names = sorted(kinds)
    # Good requests are the bulk of real traffic; every bad kind still comes up often.
    weights = [6.0 if n.startswith("good") else 1.0 for n in names]
    statuses: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    failures: Counter = Counter()
    deadline = time.monotonic() + seconds
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                kind = rng.choices(names, weights)[0]
                start = time.perf_counter()
                try:
                    status = await send(client, kind, kinds[kind][0])
                except httpx.HTTPError as exc:
                    # The server may close the connection after a 413 mid-upload; a request
                    # that never got an answer is only acceptable there.
                    if "oversized" in kind:
                        statuses[kind]["closed early"] += 1
                    else:
                        failures[f"{kind}: {type(exc).__name__}"] += 1
                    continue
                statuses[kind][status] += 1
                if kind.startswith("good") and status == 200:
                    latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        health = (await client.get("/v1/health")).json()
    return kinds, statuses, latencies, failures, health


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="run folder (default: a tiny one)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup-seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=96, help="input size of the default model")
    parser.add_argument("--max-rss-growth-mb", type=float, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="marinelife-soak-") as tmp:
        model = args.model or random_bundle(Path(tmp), "mobilenetv2_050", CLASSES, args.size)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, MARINELIFE_CACHE=str(Path(tmp) / "cache"))
        cmd = [sys.executable, "-m", "marinelife", "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--backend", args.backend, "--max-upload-mb",
               str(MAX_UPLOAD_MB), "--max-files", str(MAX_FILES), "-q"]  # fmt: skip
        server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        try:
            return _run(args, server, base)
        finally:
            stop_server(server)


def _run(args, server: subprocess.Popen, base: str) -> int:
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None:
            print(server.stderr.read() if server.stderr else "", file=sys.stderr)
            print("server exited before it was ready", file=sys.stderr)
            return 1
        try:
            if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print("server never became healthy", file=sys.stderr)
            return 1
        time.sleep(0.3)
    rss_idle = rss_mb(server.pid)
    asyncio.run(soak(base, args.warmup_seconds, args.concurrency, args.seed + 1))
    rss_start = rss_mb(server.pid)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        # A leak keeps climbing; allocator warm-up flattens out. The timeline tells them apart.
        while not stop.wait(args.seconds / 10):
            samples.append((time.perf_counter() - start, rss_mb(server.pid)))

    start = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    kinds, statuses, latencies, failures, health = asyncio.run(
        soak(base, args.seconds, args.concurrency, args.seed)
    )
    stop.set()
    sampler.join()
    elapsed = time.perf_counter() - start
    rss_end = rss_mb(server.pid)
    total = sum(sum(c.values()) for c in statuses.values())
    print(f"{total} requests in {elapsed:.0f} s at concurrency {args.concurrency} "
          f"({total / elapsed:.1f} requests/s)\n")  # fmt: skip
    print(f"{'kind':32s} {'expected':10s} answers")
    wrong = 0
    server_errors = 0
    for kind in sorted(statuses):
        expected = kinds[kind][1]
        answers = statuses[kind]
        for status, count in answers.items():
            if status == "closed early":
                continue
            if status >= 500:
                server_errors += count
            if status not in expected:
                wrong += count
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(answers.items(), key=str))
        print(f"{kind:32s} {'/'.join(map(str, expected)):10s} {shown}")
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    print(
        f"\ngood requests: p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms"
    )
    print(f"5xx answers: {server_errors}; unexpected statuses: {wrong}; "
          f"requests without an answer: {sum(failures.values())}")  # fmt: skip
    for failure, count in failures.most_common(10):
        print(f"  {failure}: {count}")
    alive = server.poll() is None
    print(f"health after the soak: {health.get('status')} (server process alive: {alive})")
    growth = rss_end - rss_start
    timeline = ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in samples)
    print(f"server RSS timeline (MB): {timeline}")
    print(f"server RSS: {rss_idle:.0f} MB idle, {rss_start:.0f} MB after "
          f"{args.warmup_seconds:g} s warm-up, {rss_end:.0f} MB at the end "
          f"(growth {growth:+.1f} MB, limit {args.max_rss_growth_mb:g} MB)")  # fmt: skip
    ok = (
        server_errors == 0
        and wrong == 0
        and not failures
        and alive
        and health.get("status") == "ok"
        and growth <= args.max_rss_growth_mb
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
