"""Latency/throughput protocol shared by the PyTorch/ONNX and the TensorFlow benches.

Imports only NumPy, so a TensorFlow-only virtual environment can run it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(
    run: Callable[[np.ndarray], object], seconds: float, shape: tuple[int, int, int]
) -> dict[str, float]:
    """Batch-1 latency p50/p95 (ms) and batch-32 images/s of ``run`` on inputs of ``shape``."""
    one = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    many = np.repeat(one, 32, axis=0)
    for _ in range(3):
        run(one)
    run(many)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 10:
        t = time.perf_counter()
        run(one)
        latencies.append(time.perf_counter() - t)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or images < 64:
        run(many)
        images += 32
    throughput = images / (time.perf_counter() - start)
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return {"p50_ms": float(p50), "p95_ms": float(p95), "b32_img_s": throughput}
