"""`marinelife predict`: files, folders (recursive) and globs → a table, CSV or JSON.

Results go to stdout (CSV rows as they are computed); a file that cannot be read is reported on
its own line on stderr and skipped, and the command exits 1 at the end if any input failed. When
no input yields a single image there is nothing to predict: a usage error (exit 2).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from marinelife.data.image_io import is_image_path
from marinelife.data.scan import find_images
from marinelife.errors import MarineLifeError
from marinelife.infer.predictor import Prediction, Predictor
from marinelife.logutil import progress_enabled

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json")


def expand_inputs(items: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image paths in the order given (folders recursively, globs sorted) and inputs that failed.

    Files named explicitly are always tried (a mislabelled extension still gets decoded);
    folders and globs keep only files with an image extension.
    """
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = find_images(path)
            if not found:
                problems.append((text, "folder contains no images"))
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif any(ch in text for ch in "*?["):
            matched = []
            for match in sorted(glob.glob(text, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    matched.extend(find_images(m))
                elif m.is_file() and is_image_path(m):
                    matched.append(m)
            if not matched:
                problems.append((text, "no image files match this pattern"))
            paths.extend(matched)
        else:
            problems.append((text, "no such file or folder"))
    unique = list(dict.fromkeys(paths))
    return unique, problems


def csv_header(top_k: int) -> list[str]:
    pairs = [f"top{i}_{what}" for i in range(1, top_k + 1) for what in ("label", "prob")]
    return ["path", "label", "confidence", *pairs]


def csv_row(pred: Prediction, top_k: int) -> list[str]:
    cells = [pred.path, pred.label, f"{pred.confidence:.6f}"]
    for i in range(top_k):
        label, prob = pred.top_k[i] if i < len(pred.top_k) else ("", None)
        cells += [label, "" if prob is None else f"{prob:.6f}"]
    return cells


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


def format_table(preds: list[Prediction]) -> str:
    rows = [("path", "label", "confidence", "top-k")]
    for p in preds:
        top = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top_k)
        rows.append((p.path, p.label, f"{p.confidence:.3f}", top))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    )


def run_predict(
    model: Path,
    inputs: Sequence[str | Path],
    *,
    top_k: int = 3,
    fmt: str = "table",
    tta: str | None = None,
    batch_size: int = 16,
    reject: bool = True,
    backend: str = "auto",
    threads: int = 0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Load ``model`` and :func:`write_predictions`; returns 0, or 1 when any input failed."""
    predictor = Predictor.load(model, backend=backend, reject=reject, tta=tta, threads=threads)
    return write_predictions(
        predictor, inputs, top_k=top_k, fmt=fmt, batch_size=batch_size, out=out, err=err
    )


def write_predictions(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    *,
    top_k: int = 3,
    fmt: str = "table",
    batch_size: int = 16,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Predict every input; returns 0, or 1 when any input could not be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    if fmt not in FORMATS:
        raise MarineLifeError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if top_k < 1 or batch_size < 1:
        raise MarineLifeError("--top-k and --batch-size must be at least 1")
    paths, problems = expand_inputs(inputs)
    if not paths:
        # Nothing to predict at all is a usage error (exit 2), not a partly failed batch.
        where, reason = problems[0] if problems else (None, "no images given")
        raise MarineLifeError(reason, path=where, fix="pass image files, folders or globs")
    for note in predictor.notes:
        log.warning("%s", note)
    top_k = min(top_k, len(predictor.classes))
    failed = 0
    for text, reason in problems:
        print(f"{text}: {reason}", file=err, flush=True)
        failed += 1
    results: list[Prediction] = []
    if fmt == "csv":
        print(_csv_line(csv_header(top_k)), file=out, flush=True)
    bar = tqdm(
        total=len(paths),
        desc="predict",
        unit="img",
        leave=False,
        file=sys.stderr,
        disable=not progress_enabled() or not paths,
        dynamic_ncols=True,
    )
    with bar:
        for path, result in predictor.predict_files(paths, top_k=top_k, batch_size=batch_size):
            bar.update(1)
            if not isinstance(result, Prediction):
                failed += 1
                tqdm.write(f"{result}", file=err)
                continue
            result.path = str(path)
            if fmt == "csv":
                tqdm.write(_csv_line(csv_row(result, top_k)), file=out)
            else:
                results.append(result)
    if fmt == "table" and results:
        print(format_table(results), file=out)
    elif fmt == "json":
        print(json.dumps([r.to_dict() for r in results], indent=1, ensure_ascii=False), file=out)
    out.flush()
    if failed:
        print(f"{failed} of {len(paths) + len(problems)} inputs failed", file=err)
    return 1 if failed else 0
