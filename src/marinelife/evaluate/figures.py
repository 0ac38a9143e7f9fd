"""Training and results figures as PNG files for the run report.

Built on ``matplotlib.figure.Figure`` (no pyplot, no GUI backend), like ``data/figures.py``, whose
helpers for saving and wrapping long class names are reused so both sets of figures look alike.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import ImageOps

from marinelife.data.figures import _label, _save
from marinelife.data.image_io import load_image
from marinelife.errors import ImageDecodeError
from marinelife.evaluate.stats import Calibration
from marinelife.logutil import plural

TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#ff7f0e"
STAGE_SHADES = ("#f3f6fa", "#fbf3ea", "#eef7ee")


@dataclass(frozen=True)
class StageSpan:
    """One stage of the training history: global epochs ``first..last`` (1-based, inclusive)."""

    name: str
    first: int
    last: int


def stage_spans(history: Sequence[dict]) -> list[StageSpan]:
    spans: list[StageSpan] = []
    for row in history:
        epoch = int(row["epoch"])
        if spans and spans[-1].name == row["stage"]:
            spans[-1] = StageSpan(row["stage"], spans[-1].first, epoch)
        else:
            spans.append(StageSpan(row["stage"], epoch, epoch))
    return spans


def _mark_stages(ax, spans: Sequence[StageSpan], *, label: bool = True) -> None:
    """Shade each stage and draw its boundary, so a two-stage run reads at a glance."""
    if len(spans) < 2:
        return
    for k, span in enumerate(spans):
        ax.axvspan(span.first - 0.5, span.last + 0.5, color=STAGE_SHADES[k % 3], zorder=0)
        if k:
            ax.axvline(span.first - 0.5, color="dimgrey", linestyle="--", linewidth=1)
        if label:
            ax.text(
                (span.first + span.last) / 2,
                1.0,
                span.name,
                ha="center",
                va="bottom",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                color="dimgrey",
            )


def plot_training_curves(
    history: Sequence[dict], path: Path, *, best_epoch: int | None = None
) -> Path:
    """Accuracy and loss, train and val, per epoch; stages shaded, the kept epoch marked."""
    epochs = [int(r["epoch"]) for r in history]
    spans = stage_spans(history)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "acc", "Accuracy"), (axes[1], "loss", "Loss")):
        _mark_stages(ax, spans)
        train = [float(r[f"train_{key}"]) for r in history]
        val = [float(r[f"val_{key}"]) for r in history]
        marker = "o" if len(epochs) <= 40 else None
        ax.plot(epochs, train, color=TRAIN_COLOUR, marker=marker, markersize=3, label="train")
        ax.plot(epochs, val, color=VAL_COLOUR, marker=marker, markersize=3, label="val")
        if best_epoch is not None and best_epoch in epochs:
            i = epochs.index(best_epoch)
            ax.scatter(
                [best_epoch],
                [val[i]],
                s=110,
                facecolors="none",
                edgecolors="black",
                linewidths=1.5,
                zorder=5,
                label=f"kept (epoch {best_epoch})",
            )
        ax.set_xlabel("epoch")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(title, pad=14)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if len(spans) > 1:
        fig.suptitle("Training curves (dashed line: stage boundary)", fontsize=11)
    return _save(fig, path)


def plot_generalization_gap(history: Sequence[dict], path: Path) -> Path:
    """Val − train accuracy per epoch: far below zero means the model memorises its training set."""
    epochs = np.array([int(r["epoch"]) for r in history])
    gap = np.array([float(r["val_acc"]) - float(r["train_acc"]) for r in history])
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    _mark_stages(ax, stage_spans(history))
    colours = np.where(gap < 0, "#d62728", "#2ca02c")
    ax.bar(epochs, gap, color=colours, width=0.8, zorder=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val acc − train acc")
    ax.set_title(
        "Generalization gap (below 0: better on training images than on unseen ones)",
        pad=14,
        fontsize=10,
    )
    ax.grid(alpha=0.3, axis="y", zorder=0)
    return _save(fig, path)


def plot_lr_schedule(
    stages: dict[str, dict[str, Any]],
    history: Sequence[dict],
    path: Path,
    *,
    world_size: int = 1,
) -> Path:
    """Per-step learning rate per stage as ``plan.json`` recorded it, with the LR logged at the
    end of each epoch as dots."""
    spans = {s.name: s for s in stage_spans(history)}
    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    _mark_stages(ax, list(spans.values()))
    steps = []
    for k, (name, stage) in enumerate(stages.items()):
        span = spans.get(name)
        if span is None:
            continue
        run = span.last - span.first + 1
        x = np.asarray(stage["lr_curve"]["epoch"], dtype=float)
        lr = np.asarray(stage["lr_curve"]["lr"], dtype=float)
        keep = x <= run + 1e-9
        x, lr = x[keep], lr[keep]
        steps.append(f"{name} {stage['steps_per_epoch']}")
        colour = f"C{k}"
        ax.plot(x + span.first - 0.5, lr, color=colour, linewidth=1.5, label=name,
                drawstyle="steps-post")  # fmt: skip
        if run < stage["epochs"]:
            ax.annotate(
                f"ran {run}/{stage['epochs']}\nplanned epochs",
                (span.last + 0.5, lr[-1]),
                xytext=(-4, 14),
                textcoords="offset points",
                ha="right",
                fontsize=7,
                color=colour,
            )
    epochs = [int(r["epoch"]) + 0.5 for r in history]
    ax.scatter(
        epochs,
        [float(r["lr"]) for r in history],
        s=10,
        color="black",
        zorder=5,
        label="logged after each epoch",
    )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    per = f" x {world_size} processes" if world_size > 1 else ""
    ax.set_title(
        f"Learning-rate schedule; steps per epoch{per}: {', '.join(steps)}", pad=14, fontsize=10
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray,
    classes: Sequence[str],
    path: Path,
    *,
    normalise: bool = False,
    name: str = "Confusion matrix",
) -> Path:
    """Counts (or row-normalised recall) with the diagonal readable for many long class names."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shown = (
        np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalise else counts
    )
    n = len(classes)
    side = max(5.0, 0.42 * n + 2.5)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(1, shown.max()))
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    font = 9 if n <= 12 else 7 if n <= 25 else 5
    threshold = (1 if normalise else max(1, shown.max())) * 0.55
    for i in range(n):
        for j in range(n):
            if counts[i, j] == 0:
                continue
            text = f"{shown[i, j]:.2f}".lstrip("0") if normalise else f"{int(counts[i, j])}"
            colour = "white" if shown[i, j] > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=font, color=colour)
    labels = [_label(c) for c in classes]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(counts.sum())
    kind = "row-normalised, recall on the diagonal" if normalise else "counts"
    ax.set_title(f"{name} ({kind}), {plural(total, 'image')}", fontsize=10)
    return _save(fig, path)


def per_class_accuracy_figure(
    recall: Sequence[float], support: Sequence[int], classes: Sequence[str]
) -> Figure:
    """The per-class accuracy chart: worst class at the top, bars coloured by their value.

    Colours span red (the lower of the worst class and 0.5) to green (1.0), so 0.64 and 1.00
    look different even though both are "good" on a 0-1 scale; the colorbar shows the scale.
    """
    # Local imports: only this chart needs them.
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    order = np.argsort(np.asarray(recall, dtype=float), kind="stable")  # worst first
    values = np.asarray(recall, dtype=float)[order]
    names = [_label(classes[i]) for i in order]
    fig = Figure(figsize=(9.3, 1.2 + 0.32 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))
    low = min(0.5, float(values.min())) if len(values) else 0.5
    norm = Normalize(vmin=low, vmax=1.0)
    cmap = colormaps["RdYlGn"]
    bars = ax.barh(y, values, color=cmap(norm(values)))
    ax.bar_label(
        bars,
        labels=[f"{v:.2f} (n={support[i]})" for v, i in zip(values, order)],
        padding=3,
        fontsize=8,
    )
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()  # barh draws index 0 at the bottom; the worst class belongs on top
    mean = float(np.mean(values)) if len(values) else 0.0
    ax.axvline(mean, color="grey", linestyle="--", linewidth=1, label=f"mean {mean:.2f}")
    ax.set_xlim(0, 1.18)
    ax.set_xlabel("accuracy on this class's test images (recall)")
    ax.set_title("Per-class accuracy, worst first")
    ax.legend(loc="upper right", fontsize=8)  # beside the short (worst) bars at the top
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.02)
    return fig


def plot_per_class_accuracy(
    recall: Sequence[float], support: Sequence[int], classes: Sequence[str], path: Path
) -> Path:
    """Per-class accuracy (recall), worst first, with each class's number of test images."""
    return _save(per_class_accuracy_figure(recall, support, classes), path)


def plot_reliability(cal: Calibration, path: Path) -> Path:
    """Reliability diagram (accuracy against confidence per bin) with its ECE, and bin counts."""
    fig = Figure(figsize=(6, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = cal.edges[1] - cal.edges[0]
    centres = cal.edges[:-1] + width / 2
    filled = cal.counts > 0
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    top.bar(
        centres[filled],
        cal.accuracy[filled],
        width=width * 0.95,
        color="#1f77b4",
        edgecolor="white",
        label="accuracy",
    )
    gap_base = np.minimum(cal.accuracy, cal.mean_confidence)[filled]
    gap = np.abs(cal.accuracy - cal.mean_confidence)[filled]
    top.bar(
        centres[filled], gap, bottom=gap_base, width=width * 0.95, fill=False, hatch="///",
        edgecolor="#d62728", linewidth=0.8, label="gap to mean confidence",
    )  # fmt: skip
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"Reliability diagram — expected calibration error {cal.ece:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, cal.counts, width=width * 0.95, color="grey")
    bottom.set_xlabel("confidence of the top prediction")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return _save(fig, path)


def _thumb(path: str, size: int) -> np.ndarray | None:
    try:
        image = load_image(path, draft_size=(size, size))
    except ImageDecodeError:
        return None
    # A square centre crop: roughly what the network saw, and no white bands between tiles.
    return np.asarray(ImageOps.fit(image, (size, size)))


def plot_tiles(
    tiles: Sequence[tuple[np.ndarray | None, str]], path: Path, *, title: str, columns: int = 6
) -> Path:
    """A grid of ``(image array, caption)`` tiles; ``None`` images are marked unreadable."""
    rows = max(1, math.ceil(len(tiles) / columns))
    # layout="tight" lays out at save time, when save_figure has chosen fonts for every script.
    fig = Figure(figsize=(2.1 * columns, 0.6 + 2.55 * rows), layout="tight")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (tile, caption) in zip(axes, tiles):
        if tile is None:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", color="firebrick")
        else:
            ax.imshow(tile)
        ax.set_title(caption, fontsize=8.5, loc="left")
    if not tiles:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def plot_image_gallery(
    items: Sequence[tuple[str, str]],
    path: Path,
    *,
    title: str,
    columns: int = 6,
    thumb: int = 150,
) -> Path:
    """Photos with captions: ``(image path, caption)``; unreadable images never fail it."""
    tiles = [(_thumb(file, thumb), caption) for file, caption in items]
    return plot_tiles(tiles, path, title=title, columns=columns)


def gallery_caption(true: str, pred: str, confidence: float, width: int = 26) -> str:
    short = lambda s: textwrap.shorten(s, width, placeholder="…")  # noqa: E731
    return f"true: {short(true)}\npred: {short(pred)} ({confidence:.0%})"


def plot_metric_bars(
    names: Sequence[str],
    metrics: dict[str, Sequence[tuple[float, float, float]]],
    path: Path,
    *,
    title: str,
) -> Path:
    """Grouped bars of ``metric → [(value, low, high) per name]`` with confidence intervals."""
    n, k = len(names), len(metrics)
    width = 0.8 / max(1, k)
    fig = Figure(figsize=(max(6.0, 1.6 + 1.5 * n), 4.2))
    ax = fig.subplots()
    x = np.arange(n)
    for m, (metric, values) in enumerate(metrics.items()):
        value = np.array([v[0] for v in values])
        err = np.array([[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]])
        offset = (m - (k - 1) / 2) * width
        ax.bar(x + offset, value, width, yerr=np.nan_to_num(err), capsize=4, label=metric)
        for xi, v in zip(x + offset, value):
            # At the bar's foot: the error bar owns the top.
            ax.text(xi, 0.015, f"{v:.3f}", ha="center", va="bottom", fontsize=8, color="white",
                    rotation=90 if n > 6 else 0)  # fmt: skip
    ax.set_xticks(x, [_label(s) for s in names], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=k, frameon=False)
    ax.set_title(title, fontsize=10, pad=22)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
