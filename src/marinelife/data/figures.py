"""Dataset figures as PNG files: class balance, splits, sample images, image sizes, augmentation.

Figures are built with ``matplotlib.figure.Figure`` directly, never ``pyplot``: no GUI backend is
needed or switched (the caller's Jupyter/GUI session is left alone), nothing global is kept alive
between figures, and it is safe in a web server thread. ``inspect`` and the HTML report share
these functions.
"""

from __future__ import annotations

import functools
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from marinelife.data.image_io import load_image
from marinelife.data.scan import DatasetLayout, Sample
from marinelife.errors import ImageDecodeError
from marinelife.logutil import plural

SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "all": "#1f77b4"}
_DPI = 110
_LABEL_WIDTH = 22  # characters per line for class names next to bars and image rows


def _label(name: str) -> str:
    return textwrap.fill(name, _LABEL_WIDTH) if len(name) > _LABEL_WIDTH else name


def _mosaic_figure(
    tiles: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    path: Path,
    *,
    tile_inches: float = 1.5,
) -> Path:
    """Square uint8 tiles pasted into one image, drawn on a single axes with row/column labels.

    One ``imshow`` instead of one axes per tile: a 23x5 grid renders in well under a second.
    ``None`` tiles are marked "unreadable".
    """
    rows, cols = len(tiles), max(len(r) for r in tiles)
    size = (
        next(t.shape[0] for row in tiles for t in row if t is not None)
        if any(t is not None for row in tiles for t in row)
        else 64
    )
    gap = max(2, size // 24)
    step = size + gap
    canvas = np.full((rows * step - gap, cols * step - gap, 3), 255, np.uint8)
    missing = []
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is None:
                canvas[r * step : r * step + size, c * step : c * step + size] = 235
                missing.append((c * step + size / 2, r * step + size / 2))
            else:
                canvas[r * step : r * step + size, c * step : c * step + size] = tile
    height = 0.7 + tile_inches * rows
    fig = Figure(figsize=(2.2 + tile_inches * cols, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.55 / height))
    ax.imshow(canvas, interpolation="antialiased")
    for x, y in missing:
        ax.text(x, y, "unreadable", ha="center", va="center", color="firebrick", fontsize=8)
    ax.set_yticks([r * step + size / 2 for r in range(rows)], [_label(n) for n in row_labels],
                  fontsize=11)  # fmt: skip
    ax.set_xticks([c * step + size / 2 for c in range(len(col_labels))], col_labels, fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=13, pad=22 if any(col_labels) else 6)
    return _save(fig, path)


# Matplotlib's default font has no CJK (or Arabic, Hebrew, Thai…) glyphs, so a photo or class
# named in them would print "Glyph 29642 missing from font(s) DejaVu Sans" for every figure.
# Fonts with those scripts are used when installed (matplotlib falls back glyph by glyph);
# without one the glyph is drawn as a box, and the warning, which a user cannot act on, is not.
_FALLBACK_FONTS = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
    "IPAGothic", "IPAexGothic", "AR PL UMing CN", "Noto Sans", "Noto Sans Arabic",
    "Noto Sans Hebrew", "Noto Sans Thai", "Arial Unicode MS",
)  # fmt: skip
_MISSING_GLYPH = r"Glyph \d+ .*missing from"


@functools.cache
def font_family() -> tuple[str, ...]:
    """The default sans-serif font, then every installed font of _FALLBACK_FONTS."""
    from matplotlib import font_manager, rcParams

    installed = {f.name for f in font_manager.fontManager.ttflist}
    first = [name for name in rcParams["font.sans-serif"] if name in installed][:1]
    return (*first, *(name for name in _FALLBACK_FONTS if name in installed)) or ("sans-serif",)


def save_figure(fig: Figure, path: Path, *, dpi: int = _DPI, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG: text in fonts that cover the scripts installed fonts can show,
    and no missing-glyph warning for the rest (drawn as boxes)."""
    from matplotlib.text import Text

    path.parent.mkdir(parents=True, exist_ok=True)
    family = list(font_family())
    for text in fig.findobj(Text):
        if text.get_fontfamily() in (["sans-serif"], ["DejaVu Sans"]):
            text.set_fontfamily(family)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MISSING_GLYPH)
        fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    return path


def _save(fig: Figure, path: Path) -> Path:
    return save_figure(fig, path)


def _totals(layout: DatasetLayout) -> dict[str, int]:
    totals = dict.fromkeys(layout.classes, 0)
    for split in layout.splits:
        for name, count in layout.counts(split).items():
            totals[name] += count
    return totals


def plot_class_distribution(layout: DatasetLayout, path: Path) -> Path:
    """Images per class over all splits, largest first, with counts and the mean marked."""
    totals = _totals(layout)
    names = sorted(totals, key=lambda n: (-totals[n], n))
    counts = [totals[n] for n in names]
    fig = Figure(figsize=(8.5, 1.2 + 0.32 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))
    bars = ax.barh(y, counts, color="#1f77b4")
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_yticks(y, [_label(n) for n in names], fontsize=9)
    ax.invert_yaxis()
    mean = float(np.mean(counts))
    ax.axvline(mean, color="grey", linestyle="--", linewidth=1, label=f"mean {mean:.0f}")
    ax.set_xlabel("images")
    ratio = max(counts) / max(1, min(counts))
    ax.set_title(f"Images per class ({plural(sum(counts), 'image')}, "
                 f"{plural(len(names), 'class')}, "
                 f"largest/smallest = {ratio:.1f}x)")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.1)
    return _save(fig, path)


def plot_split_distribution(layout: DatasetLayout, path: Path) -> Path:
    """Images per class, one bar per split side by side (class order as in the dataset)."""
    splits = list(layout.splits)
    names = layout.classes
    height = 0.8 / len(splits)
    fig = Figure(figsize=(8.5, 1.4 + 0.16 * len(names) * max(2, len(splits))))
    ax = fig.subplots()
    y = np.arange(len(names))
    for k, split in enumerate(splits):
        counts = layout.counts(split)
        offset = (k - (len(splits) - 1) / 2) * height
        bars = ax.barh(y + offset, [counts[n] for n in names], height=height, label=split,
                       color=SPLIT_COLOURS.get(split))  # fmt: skip
        ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_yticks(y, [_label(n) for n in names], fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("images")
    ax.set_title("Images per class and split", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(splits), frameon=False)
    ax.margins(x=0.1)
    return _save(fig, path)


def plot_split_volumes(layout: DatasetLayout, path: Path) -> Path:
    """Total images per split with their share of the dataset."""
    splits = list(layout.splits)
    counts = [len(layout.splits[s]) for s in splits]
    total = max(1, sum(counts))
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    bars = ax.bar(splits, counts, color=[SPLIT_COLOURS.get(s, "#1f77b4") for s in splits])
    ax.bar_label(bars, labels=[f"{c} ({100 * c / total:.0f}%)" for c in counts], padding=3)
    ax.set_ylabel("images")
    ax.set_title(f"Images per split ({sum(counts)} in total)")
    ax.margins(y=0.15)
    return _save(fig, path)


def _thumbnail(path: Path, size: int) -> Image.Image | None:
    try:
        image = load_image(path, draft_size=(size, size))
    except ImageDecodeError:
        return None
    return ImageOps.pad(image, (size, size), color=(255, 255, 255))


def pick_samples(
    layout: DatasetLayout, per_class: int, *, split: str | None = None, seed: int = 0
) -> dict[str, list[Sample]]:
    """Up to ``per_class`` random samples of each class from ``split`` (train, or all if flat)."""
    split = split or ("train" if "train" in layout.splits else next(iter(layout.splits)))
    by_class: dict[str, list[Sample]] = {name: [] for name in layout.classes}
    for sample in layout.samples(split):
        by_class[sample.label].append(sample)
    rng = np.random.default_rng(seed)
    picked = {}
    for name, items in by_class.items():
        order = rng.permutation(len(items))[:per_class]
        picked[name] = [items[i] for i in sorted(order)]
    return picked


def plot_sample_grid(
    layout: DatasetLayout,
    path: Path,
    *,
    per_class: int = 5,
    split: str | None = None,
    seed: int = 0,
    thumb: int = 160,
) -> Path:
    """A row of example photos per class, the class name as the row label."""
    picked = pick_samples(layout, per_class, split=split, seed=seed)
    tiles = []
    for samples in picked.values():
        row = [_thumbnail(s.path, thumb) for s in samples]
        blank = np.full((thumb, thumb, 3), 255, np.uint8)
        tiles.append([None if t is None else np.asarray(t) for t in row]
                     + [blank] * (per_class - len(row)))  # fmt: skip
    return _mosaic_figure(tiles, list(picked), [], "Sample images per class", path)


def plot_image_sizes(sizes: Sequence[tuple[int, int]], path: Path, *, note: str = "") -> Path:
    """Histogram of widths and heights, and width against height (aspect ratios)."""
    widths = np.array([w for w, _ in sizes], dtype=float)
    heights = np.array([h for _, h in sizes], dtype=float)
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    if len(sizes):
        top = max(widths.max(), heights.max())
        bins = np.linspace(0, top * 1.02, 40)
        left.hist(widths, bins=bins, alpha=0.6, label=f"width (median {np.median(widths):.0f})")
        left.hist(heights, bins=bins, alpha=0.6, label=f"height (median {np.median(heights):.0f})")
        left.legend(fontsize=8)
        right.scatter(widths, heights, s=6, alpha=0.4)
        right.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--")
    left.set_xlabel("pixels")
    left.set_ylabel("images")
    left.set_title("Image width and height")
    right.set_xlabel("width (px)")
    right.set_ylabel("height (px)")
    right.set_title("Width vs height (dashed: square)")
    fig.suptitle(f"Image sizes ({plural(len(sizes), 'image')}{note})")
    return _save(fig, path)


def unnormalise(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``3xHxW`` tensor back to an ``HxWx3`` float image in [0, 1] for display."""
    array = tensor.detach().cpu().numpy().transpose(1, 2, 0)
    return np.clip(array * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def plot_augmented_samples(
    samples: Sequence[tuple[str, np.ndarray]],
    train_transform: Callable[[np.ndarray], torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    path: Path,
    *,
    views: int = 5,
    eval_transform: Callable[[np.ndarray], torch.Tensor] | None = None,
    title: str = "Augmented training samples",
) -> Path:
    """Per (label, image) row: the eval view (when given), then ``views`` training views."""
    tiles = []
    for _, image in samples:
        tensors = ([eval_transform(image)] if eval_transform else []) + [
            train_transform(image) for _ in range(views)
        ]
        tiles.append([(unnormalise(t, mean, std) * 255).round().astype(np.uint8) for t in tensors])
    columns = (["eval view"] if eval_transform else []) + ["train view"] * views
    names = [name for name, _ in samples]
    return _mosaic_figure(tiles, names, columns, title, path, tile_inches=1.6)
