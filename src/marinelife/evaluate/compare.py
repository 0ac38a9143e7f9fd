"""`marinelife compare RUN...`: which recipe is better, and is the difference real?

One row per run (recipe, backbone, denoise, accuracy and macro-F1 with 95 % bootstrap intervals,
parameters, training time, inference speed) and an exact McNemar test for every pair. Pairing
needs the same photos: runs evaluated on different test files are refused, never silently mixed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.errors import MarineLifeError
from marinelife.evaluate import report_html as rh
from marinelife.evaluate.rundata import RunData, load_run
from marinelife.evaluate.stats import (
    Interval,
    McNemarResult,
    accuracy_interval,
    macro_f1_interval,
    mcnemar_exact,
)
from marinelife.logutil import display_width, pad, plural

SPEED_IMAGES = 32
SPEED_BATCH = 16


@dataclass
class RunSummary:
    name: str
    run_dir: Path
    recipe: str
    architecture: str
    denoise: str
    accuracy: Interval
    macro_f1: Interval
    parameters: int | None
    train_seconds: float | None
    images_per_s: float | None = None
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)


@dataclass
class PairTest:
    a: str
    b: str
    result: McNemarResult
    p_holm: float


@dataclass
class Comparison:
    runs: list[RunSummary]
    pairs: list[PairTest]
    num_images: int
    speed_note: str


def file_key(path: str) -> str:
    """``CLASS/FILE``: the same photo matches even when the dataset was moved or re-rooted."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


def _aligned(runs: Sequence[RunData]) -> tuple[list[str], list[np.ndarray]]:
    """Per run, the correctness vector in the first run's file order; refuses mismatches."""
    ref = runs[0]
    ref_metrics = ref.require_metrics()
    ref_keys = [file_key(f) for f in ref_metrics["files"]]
    ref_targets = dict(zip(ref_keys, ref_metrics["targets"]))
    vectors = []
    for run in runs:
        metrics = run.require_metrics()
        if list(metrics["classes"]) != list(ref_metrics["classes"]):
            raise MarineLifeError(f"classes differ from {ref.run_dir}'s", path=run.run_dir,
                                  fix="compare runs trained on the same classes")  # fmt: skip
        keys = [file_key(f) for f in metrics["files"]]
        if set(keys) != set(ref_keys) or len(keys) != len(ref_keys):
            only_here = len(set(keys) - set(ref_keys))
            only_ref = len(set(ref_keys) - set(keys))
            raise MarineLifeError(
                f"was evaluated on different test files than {ref.run_dir} ({only_here} only "
                f"here, {only_ref} only there)",
                path=run.run_dir,
                fix="evaluate every run on the same data: marinelife evaluate RUN --data DATA",
            )
        index = {k: i for i, k in enumerate(keys)}
        order = np.array([index[k] for k in ref_keys])
        targets = np.asarray(metrics["targets"])[order]
        if any(t != ref_targets[k] for k, t in zip(ref_keys, targets)):
            raise MarineLifeError(f"labels of the test files differ from {ref.run_dir}'s",
                                  path=run.run_dir)  # fmt: skip
        vectors.append(np.asarray(metrics["predictions"])[order] == targets)
    return ref_keys, vectors


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values: many pairs make a small raw p-value likelier by luck."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def measure_speed(
    run_dir: Path, files: Sequence[str], *, images: int = SPEED_IMAGES
) -> float | None:
    """Images per second of the forward pass (batch 16, CPU, decode excluded) on test photos."""
    import torch

    from marinelife.data.preprocess import load_and_preprocess
    from marinelife.errors import ImageDecodeError
    from marinelife.models.bundle import load_bundle

    model, info = load_bundle(run_dir)
    tensors = []
    for path in files[:images]:
        try:
            tensors.append(load_and_preprocess(path, info.preprocess))
        except (ImageDecodeError, OSError):
            continue
    if not tensors:
        return None
    batch = torch.stack(tensors)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first calls allocate and pick kernels
            model(batch[:SPEED_BATCH])
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(0, len(batch), SPEED_BATCH):
                model(batch[i : i + SPEED_BATCH])
            best = min(best, time.perf_counter() - start)
    return len(batch) / best


def compare_runs(run_dirs: Sequence[str | Path], *, speed: bool = True) -> Comparison:
    if len(run_dirs) < 2:
        raise MarineLifeError("compare needs at least two run folders")
    resolved = [Path(r).resolve() for r in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise MarineLifeError("the same run folder is listed twice")
    runs = [load_run(r, "test") for r in run_dirs]
    keys, vectors = _aligned(runs)
    names = _unique_names(runs)
    summaries = []
    for name, run, correct in zip(names, runs, vectors):
        metrics = run.metrics
        targets, preds = np.asarray(metrics["targets"]), np.asarray(metrics["predictions"])
        config = run.config
        summaries.append(RunSummary(
            name=name, run_dir=run.run_dir,
            recipe=config.recipe if config else (run.info.recipe if run.info else "–"),
            architecture=(config.architecture if config else
                          run.info.architecture if run.info else "–"),
            denoise=rh.denoise_summary(run),
            accuracy=accuracy_interval(targets, preds),
            macro_f1=macro_f1_interval(targets, preds, len(metrics["classes"])),
            parameters=metrics.get("num_parameters"), train_seconds=metrics.get("train_seconds"),
            images_per_s=measure_speed(run.run_dir, metrics["files"]) if speed else None,
            correct=correct,
        ))  # fmt: skip
    tests = [(a, b, mcnemar_exact(a.correct, b.correct)) for a, b in combinations(summaries, 2)]
    adjusted = holm([t.p_value for _, _, t in tests])
    pairs = [PairTest(a.name, b.name, t, p) for (a, b, t), p in zip(tests, adjusted)]
    import torch

    note = (f"forward pass only, batch {SPEED_BATCH}, CPU with {torch.get_num_threads()} "
            f"threads, on up to {SPEED_IMAGES} test images (decode excluded)" if speed
            else "not measured (--no-speed)")  # fmt: skip
    return Comparison(summaries, pairs, len(keys), note)


def _unique_names(runs: Sequence[RunData]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.run_dir) for r in runs]


def _row(s: RunSummary) -> list[str]:
    return [s.name, s.recipe, s.architecture, s.denoise, rh.fmt_interval(s.accuracy),
            rh.fmt_interval(s.macro_f1), f"{s.parameters / 1e6:.2f} M" if s.parameters else "–",
            rh.fmt_seconds(s.train_seconds),
            f"{s.images_per_s:.1f}" if s.images_per_s else "–"]  # fmt: skip


RUN_HEADERS = ["run", "recipe", "backbone", "denoise", "accuracy [95% CI]",
               "macro-F1 [95% CI]", "parameters", "training time", "images/s"]  # fmt: skip
PAIR_HEADERS = ["run A", "run B", "only A right", "only B right", "McNemar p", "Holm p"]


def _pair_row(p: PairTest) -> list[str]:
    r = p.result
    return [p.a, p.b, str(r.only_a), str(r.only_b), f"{r.p_value:.3g}", f"{p.p_holm:.3g}"]


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(display_width(h), *(display_width(r[i]) for r in rows)) for i, h in enumerate(headers)
    ]
    line = lambda cells: "  ".join(pad(c, w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _notes(c: Comparison) -> str:
    return (
        f"{c.num_images} test images, the same for every run. Intervals: percentile bootstrap "
        "(2000 resamples) over test images. McNemar: exact two-sided test on the images exactly "
        "one run of the pair gets right; Holm: adjusted for the number of pairs. "
        f"images/s: {c.speed_note}."
    )


def render_markdown(c: Comparison) -> str:
    out = [markdown_table(RUN_HEADERS, [_row(s) for s in c.runs]), ""]
    out += [markdown_table(PAIR_HEADERS, [_pair_row(p) for p in c.pairs]), "", _notes(c), ""]
    return "\n".join(out)


def render_html(c: Comparison, chart: str | None) -> str:
    body = rh.table(RUN_HEADERS, [_row(s) for s in c.runs], numeric={4, 5, 6, 7, 8})
    if chart:
        body += f'<figure><img src="{rh.esc(chart)}" alt="comparison chart"></figure>'
    body += "<h3>Paired tests</h3>" + rh.table(
        PAIR_HEADERS, [_pair_row(p) for p in c.pairs], numeric={2, 3, 4, 5}
    )
    body += f'<p class="note">{rh.esc(_notes(c))}</p>'
    return rh.page("marinelife comparison", [("Runs", body)])


def to_json(c: Comparison) -> dict[str, Any]:
    return {
        "num_images": c.num_images,
        "runs": [{"name": s.name, "run_dir": str(s.run_dir), "recipe": s.recipe,
                  "architecture": s.architecture, "denoise": s.denoise,
                  "accuracy": s.accuracy.as_dict(), "macro_f1": s.macro_f1.as_dict(),
                  "parameters": s.parameters, "train_seconds": s.train_seconds,
                  "images_per_s": s.images_per_s} for s in c.runs],
        "pairs": [{"a": p.a, "b": p.b, "only_a": p.result.only_a, "only_b": p.result.only_b,
                   "p_value": p.result.p_value, "p_holm": p.p_holm} for p in c.pairs],
        "speed": c.speed_note,
    }  # fmt: skip


def write_outputs(c: Comparison, out: Path) -> dict[str, Path]:
    from marinelife.evaluate.figures import plot_metric_bars

    out.mkdir(parents=True, exist_ok=True)
    chart = plot_metric_bars(
        [s.name for s in c.runs],
        {"accuracy": [(s.accuracy.value, s.accuracy.low, s.accuracy.high) for s in c.runs],
         "macro-F1": [(s.macro_f1.value, s.macro_f1.low, s.macro_f1.high) for s in c.runs]},
        out / "comparison.png",
        title="Test accuracy and macro-F1 with 95% bootstrap intervals "
        f"({plural(c.num_images, 'image')})",
    )  # fmt: skip
    paths = {"png": chart, "md": out / "comparison.md", "html": out / "comparison.html",
             "json": out / "comparison.json"}  # fmt: skip
    paths["md"].write_text(render_markdown(c), encoding="utf-8")
    paths["html"].write_text(render_html(c, chart.name), encoding="utf-8")
    paths["json"].write_text(json.dumps(to_json(c), indent=1) + "\n", encoding="utf-8")
    return paths


def run_compare(runs: Sequence[Path], *, out: Path | None = None, speed: bool = True) -> Comparison:
    comparison = compare_runs(runs, speed=speed)
    print(text_table(RUN_HEADERS, [_row(s) for s in comparison.runs]))
    print()
    print(text_table(PAIR_HEADERS, [_pair_row(p) for p in comparison.pairs]))
    print()
    print(_notes(comparison))
    if out is not None:
        paths = write_outputs(comparison, Path(out))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return comparison
