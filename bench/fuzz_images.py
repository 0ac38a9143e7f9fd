"""Fuzz the image path: thousands of random and mutated JPEG/PNG/GIF/WebP/TIFF/BMP files through
``load_and_preprocess`` (what predict and serve run) and the training dataset + train transform.

Each case must end in a finite float32 ``3xSxS`` tensor or a ``MarineLifeError``; anything else is
a crash, and a case running over ``--case-seconds`` is a hang. Prints the count per outcome (with
the error reasons grouped), per starting format, and time per case; exits 1 on any crash or hang.

    .venv/bin/python bench/fuzz_images.py [--cases 5000] [--seed 0] [--size 32]
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from marinelife.config import AugmentConfig
from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.data.scan import Sample
from marinelife.data.synthetic import IMAGE_FORMATS as FORMATS
from marinelife.data.synthetic import IMAGE_MODES as MODES
from marinelife.data.synthetic import encode_image, mutate_bytes
from marinelife.data.transforms import build_train_transform
from marinelife.errors import MarineLifeError

SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif",
          "BMP": ".bmp", "random": ".jpg"}  # fmt: skip


class CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout


def encode(rng: np.random.Generator, fmt: str) -> bytes:
    width, height = (int(v) for v in rng.integers(1, 65, 2))
    frames = 3 if rng.random() < 0.2 else 1
    seed = int(rng.integers(0, 2**31))
    return encode_image(fmt, str(rng.choice(MODES)), width, height, seed=seed, frames=frames)


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    ops = ["flip", "overwrite", "insert", "truncate", "delete", "duplicate"]
    return mutate_bytes(
        data,
        [
            (str(rng.choice(ops)), float(rng.random()), rng.bytes(int(rng.integers(1, 17))))
            for _ in range(int(rng.integers(1, 7)))
        ],
    )


def make_case(rng: np.random.Generator) -> tuple[str, str, bytes]:
    """(starting format, kind, bytes)."""
    kind = str(rng.choice(["mutated", "mutated", "mutated", "valid", "splice", "random"]))
    if kind == "random":
        return "random", kind, rng.bytes(int(rng.integers(0, 2048)))
    fmt = str(rng.choice(FORMATS))
    data = encode(rng, fmt)
    if kind == "splice":
        cut = int(rng.integers(0, min(64, len(data)) + 1))
        return fmt, kind, data[:cut] + rng.bytes(int(rng.integers(0, 1024)))
    return fmt, kind, data if kind == "valid" else mutate(rng, data)


def _reason(exc: MarineLifeError) -> str:
    text = str(exc).split(": ", 1)[-1].split(" — ")[0]
    text = re.sub(r"\(.*", "(...)", text)  # group "cannot decode image (<details>)"
    text = re.sub(r"\d[\d,x]*", "N", text)  # group "43673x3359 pixels exceeds ..."
    return f"{type(exc).__name__}: {text.strip()}"[:90]


def run_case(path: Path, data: bytes, config, dataset_transform, size: int, seconds: int) -> str:
    path.write_bytes(data)
    signal.alarm(seconds)
    try:
        if dataset_transform is None:
            tensor = load_and_preprocess(data, config)
        else:
            dataset = ImageSampleDataset(
                [Sample(path, "x")], {"x": 0}, dataset_transform, draft_size=config.draft_size
            )
            tensor, _ = dataset[(0, 1)]
    except MarineLifeError as exc:
        return _reason(exc)
    except CaseTimeout:
        return "HANG"
    except Exception as exc:  # noqa: BLE001 - the point is to count what escapes
        return f"CRASH {type(exc).__name__}: {str(exc)[:80]}"
    finally:
        signal.alarm(0)
    ok = (
        isinstance(tensor, torch.Tensor)
        and tensor.dtype == torch.float32
        and tuple(tensor.shape) == (3, size, size)
        and bool(torch.isfinite(tensor).all())
    )
    return "tensor" if ok else f"CRASH bad tensor {getattr(tensor, 'shape', None)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="network input size")
    parser.add_argument(
        "--dataset-share", type=float, default=0.3, help="share of cases through the dataset path"
    )
    parser.add_argument("--case-seconds", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(1)
    # The dataset names each unreadable file in a warning; thousands of them are noise here.
    logging.getLogger("marinelife").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" and friends
    signal.signal(signal.SIGALRM, _on_alarm)
    config = PreprocessConfig(
        input_size=args.size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    train_transform = build_train_transform(AugmentConfig(), config, seed=0)
    rng = np.random.default_rng(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    by_format: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    times, failures = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="marinelife-fuzz-") as tmp:
        for case in range(args.cases):
            fmt, kind, data = make_case(rng)
            via_dataset = rng.random() < args.dataset_share
            path = Path(tmp) / f"case{SUFFIX[fmt]}"
            t0 = time.perf_counter()
            outcome = run_case(path, data, config, train_transform if via_dataset else None,
                               args.size, args.case_seconds)  # fmt: skip
            times.append(time.perf_counter() - t0)
            outcomes[f"{'dataset' if via_dataset else 'decode '}  {outcome}"] += 1
            by_format[fmt]["tensor" if outcome == "tensor" else "error"] += 1
            if outcome.startswith(("CRASH", "HANG")):
                keep = Path(tmp).parent / f"marinelife-fuzz-failure-{args.seed}-{case}{path.suffix}"
                keep.write_bytes(data)
                failures.append(f"case {case} ({fmt}, {kind}): {outcome} -> saved {keep}")
    total = time.perf_counter() - start
    ms = np.array(times) * 1000
    print(f"{args.cases} cases in {total:.1f} s ({args.cases / total:.0f} cases/s); per case "
          f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
          f"max {ms.max():.0f} ms")  # fmt: skip
    print(f"{'path     outcome':92s} count")
    for outcome, count in outcomes.most_common():
        print(f"{outcome:92s} {count}")
    print("\nby starting format (tensor / project error):")
    for fmt in sorted(by_format):
        print(f"  {fmt:7s} {by_format[fmt]['tensor']:5d} / {by_format[fmt]['error']:5d}")
    crashes = sum(
        c for o, c in outcomes.items() if o.split(maxsplit=1)[1].startswith(("CRASH", "HANG"))
    )
    print(f"\ncrashes or hangs: {crashes}")
    for line in failures[:20]:
        print(line)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
