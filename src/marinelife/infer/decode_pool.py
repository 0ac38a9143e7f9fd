"""Decode photos in parallel worker threads or processes: in input order, a bounded way ahead.

Prediction is a pipeline: workers decode and preprocess the next photos while the main thread
runs the network on the current batch. :func:`ordered_map` keeps at most ``ahead`` photos in
flight, so memory stays flat however many paths stream in (a survey of 100k photos holds the
same few batches as a folder of ten).

Threads are the default: Pillow and NumPy release the GIL while they decode, resize and
normalise, so threads overlap inference without copying pixels between processes
(``bench/predict_scale.py`` measures both; see docs/benchmarks.md). Processes (``kind="process"``)
are started with ``spawn``: forking a process that holds ONNX Runtime's or PyTorch's thread
pools can deadlock the child.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from marinelife.data.exif import read_photo_metadata
from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.errors import ImageDecodeError, MarineLifeError

POOL_KINDS = ("thread", "process")
DEFAULT_WORKERS = 4  # more decoders than this only fight the network for the same cores
T = TypeVar("T")
R = TypeVar("R")

# What a worker hands back for one photo: the network input and its EXIF fields (or None).
Loaded = tuple[np.ndarray, "dict[str, Any] | None"]


def default_workers() -> int:
    return max(1, min(DEFAULT_WORKERS, os.cpu_count() or 1))


def load_photo(
    path: Path, config: PreprocessConfig, with_metadata: bool = False
) -> Loaded | ImageDecodeError:
    """Decode + preprocess one photo (and read its EXIF); an unreadable file is returned, not
    raised, so one bad photo never cancels the batch around it. Module-level: picklable."""
    try:
        array = load_and_preprocess(path, config).numpy()
    except ImageDecodeError as exc:
        return exc
    return array, (read_photo_metadata(path).to_dict() if with_metadata else None)


def make_executor(kind: str = "thread", workers: int = 0) -> Executor:
    """A pool for :func:`ordered_map` (0 workers: :func:`default_workers`); shut it down after."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise MarineLifeError(f"--workers must be 0 (automatic) or more, got {workers!r}")
    workers = workers or default_workers()
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="marinelife-decode")
    if kind == "process":
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
    raise MarineLifeError(f"decode pool {kind!r} is not one of {', '.join(POOL_KINDS)}")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: Executor | None = None,
    workers: int = 0,
    kind: str = "thread",
    ahead: int = 32,
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in the order of ``items`` (consumed lazily), ``fn`` running on
    ``executor`` (else a new pool of ``workers`` threads or processes) at most ``ahead`` items
    ahead of the consumer.

    Closing the iterator early cancels what has not started and waits for what has.
    """
    pool = executor or make_executor(kind, workers)
    pending: collections.deque[tuple[T, Future]] = collections.deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= max(ahead, 1):
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)
