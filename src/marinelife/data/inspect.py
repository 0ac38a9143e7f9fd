"""`marinelife inspect DATA`: a summary table on stdout and dataset figures as PNGs.

The figures go under the current folder (``./inspect/<dataset name>/``, or ``--out``), never into
or beside the dataset: the user's photo folder and its parent are only ever read. ``--augmented``
runs a recipe's real training transform on a few photos, so what is shown is exactly what the
network will be fed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from marinelife.config import TrainConfig, available_recipes, resolve_config
from marinelife.data import figures
from marinelife.data.image_io import load_image_array
from marinelife.data.scan import DatasetLayout, Sample, scan_dataset
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.logutil import plural

# Header reads are cheap but not free on network drives; a random sample shows the distribution.
MAX_SIZE_SAMPLES = 5000
AUGMENTED_ROWS = 8
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


DEFAULT_PARENT = Path("inspect")  # under the current folder, never beside the user's data
_RECORD = "inspect.json"  # which dataset a default output folder belongs to


def default_out_dir(data: Path) -> Path:
    """``./inspect/<dataset name>``; a second dataset of the same name gets ``<name>-<hash>``
    instead of replacing the first one's figures."""
    resolved = Path(data).expanduser().resolve()
    out = DEFAULT_PARENT / (resolved.name or "dataset")
    try:
        owner = json.loads((out / _RECORD).read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner is not None and owner != str(resolved):
        tag = hashlib.sha256(str(resolved).encode("utf-8")).hexdigest()[:8]
        out = DEFAULT_PARENT / f"{resolved.name}-{tag}"
    return out


def _check_out_dir(data: Path, out: Path) -> None:
    data_r, out_r = data.resolve(), out.resolve()
    if out_r == data_r or out_r.is_relative_to(data_r):
        raise MarineLifeError(
            "output folder is inside the dataset folder",
            path=out,
            fix=f"choose a folder outside {data} with --out (or run from another folder: the "
            "default is ./inspect/NAME)",
        )
    if out.exists() and not out.is_dir():
        raise MarineLifeError("output path is a file", path=out, fix="choose a folder")


def read_image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` as displayed (EXIF rotation applied) from the header only; ``None`` if
    the file is not a readable image. No pixels are decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return (width, height)


def summary_table(layout: DatasetLayout) -> str:
    """Class × split image counts with totals, as aligned plain text."""
    splits = list(layout.splits)
    counts = {split: layout.counts(split) for split in splits}
    name_width = max([len("class"), len("total"), *(len(n) for n in layout.classes)])
    col = max(7, *(len(s) + 2 for s in splits))
    header = "class".ljust(name_width) + "".join(s.rjust(col) for s in splits)
    header += "total".rjust(col) if len(splits) > 1 else ""
    lines = [header, "-" * len(header)]
    for name in layout.classes:
        row = [counts[s][name] for s in splits]
        line = name.ljust(name_width) + "".join(str(v).rjust(col) for v in row)
        lines.append(line + (str(sum(row)).rjust(col) if len(splits) > 1 else ""))
    lines.append("-" * len(header))
    totals = [len(layout.splits[s]) for s in splits]
    line = "total".ljust(name_width) + "".join(str(v).rjust(col) for v in totals)
    lines.append(line + (str(sum(totals)).rjust(col) if len(splits) > 1 else ""))
    return "\n".join(lines)


def _size_sample(layout: DatasetLayout, seed: int = 0) -> tuple[list[Sample], str]:
    samples = [s for _, s in layout.all_samples()]
    if len(samples) <= MAX_SIZE_SAMPLES:
        return samples, ""
    rng = np.random.default_rng(seed)
    picked = [samples[i] for i in sorted(rng.choice(len(samples), MAX_SIZE_SAMPLES, replace=False))]
    return picked, f", random sample of {len(samples)}"


def _train_config(recipe: str) -> TrainConfig:
    # Before any recipe ships (early checkouts) the defaults are the original script's settings.
    if not available_recipes() and not recipe.endswith((".yaml", ".yml")):
        return TrainConfig()
    return resolve_config(recipe)


def _augmented_figure(layout: DatasetLayout, recipe: str, path: Path) -> Path:
    from marinelife.data.preprocess import preprocess_config_for_architecture
    from marinelife.data.transforms import build_eval_transform, build_train_transform

    config = _train_config(recipe)
    preprocess = preprocess_config_for_architecture(
        config.architecture,
        input_size=config.input_size,
        denoise=config.denoise,
        enhance=config.enhance,
    )
    train_tf = build_train_transform(config.augment, preprocess, seed=config.seed)
    eval_tf = build_eval_transform(preprocess)
    picked = figures.pick_samples(layout, 1, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    names = list(picked)
    if len(names) > AUGMENTED_ROWS:
        names = [names[i] for i in sorted(rng.choice(len(names), AUGMENTED_ROWS, replace=False))]
    rows = []
    for name in names:
        for sample in picked[name]:
            try:
                image = load_image_array(sample.path, draft_size=preprocess.draft_size)
            except ImageDecodeError:
                continue
            rows.append((name, image))
    if not rows:
        raise MarineLifeError("no readable images to augment", path=layout.root,
                              fix="run `marinelife check` on it")  # fmt: skip
    aug = config.augment
    title = (
        f"Recipe '{config.recipe}' ({config.architecture}, {preprocess.input_size} px, "
        f"enhance={preprocess.enhance.name}, denoise={preprocess.denoise.name}, augmentation "
        f"{'on' if aug.enabled else 'off'})"
    )
    return figures.plot_augmented_samples(
        rows, train_tf, preprocess.mean, preprocess.std, path, eval_transform=eval_tf, title=title
    )


def run_inspect(
    data: Path, *, out: Path | None = None, augmented: bool = False, recipe: str = "two-stage-lite"
) -> Path:
    """Print the class × split table and write the dataset figures; returns the output folder."""
    data = Path(data).expanduser()
    layout = scan_dataset(data)
    chosen = out is not None
    out = Path(out).expanduser() if chosen else default_out_dir(data)
    _check_out_dir(data, out)
    if augmented:
        _train_config(recipe)  # a bad recipe name fails before any work is done
    out.mkdir(parents=True, exist_ok=True)
    if not chosen:  # so the next dataset of the same name gets its own default folder
        record = json.dumps({"data": str(data.resolve())}, ensure_ascii=False)
        (out / _RECORD).write_text(record + "\n", encoding="utf-8")

    print(f"{data}: {plural(len(layout.classes), 'class')}, "
          f"{plural(sum(len(v) for v in layout.splits.values()), 'image')}"
          + (" (flat folder, no splits)" if layout.flat else ""))  # fmt: skip
    print(summary_table(layout))

    written = [
        figures.plot_class_distribution(layout, out / "class_distribution.png"),
        figures.plot_split_volumes(layout, out / "split_volumes.png"),
    ]
    if not layout.flat:
        written.append(figures.plot_split_distribution(layout, out / "split_distribution.png"))
    written.append(figures.plot_sample_grid(layout, out / "sample_grid.png"))
    samples, note = _size_sample(layout)
    sizes = [size for s in samples if (size := read_image_size(s.path)) is not None]
    unreadable = len(samples) - len(sizes)
    if unreadable:
        note += f"; {unreadable} unreadable, see `marinelife check`"
    written.append(figures.plot_image_sizes(sizes, out / "image_sizes.png", note=note))
    if augmented:
        written.append(_augmented_figure(layout, recipe, out / "augmented_samples.png"))
    print(f"\nwrote {len(written)} figures to {out}/:")
    for path in written:
        print(f"  {path.name}")
    return out
