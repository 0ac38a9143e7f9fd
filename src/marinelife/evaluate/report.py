"""`marinelife report RUN_DIR`: every figure as a PNG under ``RUN_DIR/figures/`` and one
``report.html`` that opens offline (no scripts, no CDN; images beside it, or embedded).

Sections: the run's settings, training curves, test results, one section per evaluation of
another dataset (``RUN/evals/``), and (with ``--data``) the dataset.
Anything a run folder lacks (no history for a bundle, no metrics before evaluation) is skipped
with a note rather than failing the whole report.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from marinelife._version import __version__
from marinelife.data.scan import DatasetLayout, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate import figures as fig
from marinelife.evaluate import report_html as rh
from marinelife.evaluate.evals import safe_name
from marinelife.evaluate.metrics import confused_pairs
from marinelife.evaluate.report_evals import eval_section, eval_title, macro_f1_ci
from marinelife.evaluate.rundata import RunData, load_run
from marinelife.evaluate.stats import accuracy_interval, calibration
from marinelife.logutil import plural

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
GALLERY_MAX = 36


def _best_global_epoch(run: RunData) -> int | None:
    label = str((run.metrics or {}).get("best_epoch") or "")
    if not label and run.info is not None:
        label = str(run.info.metrics.get("epoch", ""))
    parts = label.split()
    if len(parts) != 2 or "/" not in parts[1]:
        return None
    for span in fig.stage_spans(run.history):
        if span.name == parts[0]:
            return span.first + int(parts[1].split("/")[0]) - 1
    return None


def training_figures(run: RunData, out: Path, layout: DatasetLayout | None) -> dict[str, Path]:
    paths = {}
    best = _best_global_epoch(run)
    paths["training_curves"] = fig.plot_training_curves(
        run.history, out / "training_curves.png", best_epoch=best
    )
    paths["generalization_gap"] = fig.plot_generalization_gap(
        run.history, out / "generalization_gap.png"
    )
    stages = (run.plan or {}).get("stages")
    if stages:
        paths["lr_schedule"] = fig.plot_lr_schedule(
            stages, run.history, out / "lr_schedule.png", world_size=run.plan.get("world_size", 1)
        )
    return paths


def results_figures(
    run: RunData, out: Path, gallery: int = GALLERY_MAX, gradcam: bool = True
) -> dict[str, Path]:
    metrics = run.require_metrics()
    classes = list(metrics["classes"])
    matrix = np.asarray(metrics["confusion_matrix"])
    per_class = metrics["per_class"]
    targets = np.asarray(metrics["targets"])
    preds = np.asarray(metrics["predictions"])
    confidence = np.asarray(metrics["confidence"])
    paths = {
        "confusion_matrix": fig.plot_confusion_matrix(
            matrix, classes, out / "confusion_matrix.png"
        ),
        "confusion_matrix_normalized": fig.plot_confusion_matrix(
            matrix, classes, out / "confusion_matrix_normalized.png", normalise=True
        ),
        "per_class_accuracy": fig.plot_per_class_accuracy(
            [per_class[c]["recall"] for c in classes],
            [per_class[c]["support"] for c in classes],
            classes,
            out / "per_class_accuracy.png",
        ),
        "reliability": fig.plot_reliability(
            calibration(confidence, preds == targets), out / "reliability.png"
        ),
    }
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:gallery]
    items = [
        (
            metrics["files"][i],
            fig.gallery_caption(classes[targets[i]], classes[preds[i]], confidence[i]),
        )
        for i in wrong
    ]
    total = int((preds != targets).sum())
    shown = f"the {len(items)} most confident of {total}" if total > len(items) else f"all {total}"
    paths["misclassified"] = fig.plot_image_gallery(
        items,
        out / "misclassified.png",
        title=f"Misclassified {run.split} images ({shown}), most confident mistakes first",
    )
    if gradcam:
        paths.update(gradcam_figures(run, out, wrong))
    return paths


def gradcam_figures(run: RunData, out: Path, wrong: np.ndarray) -> dict[str, Path]:
    """Grad-CAM over the misclassified gallery (why that answer) and one correct photo per class
    (what it looks at); skipped without the grad-cam package or the run's PyTorch weights."""
    from marinelife.evaluate.explain import gradcam_available, gradcam_gallery

    info = run.info
    if not gradcam_available() or info is None or info.is_onnx:
        return {}
    if not (run.run_dir / info.weights).is_file():
        return {}
    from marinelife.models.bundle import load_bundle

    model, info = load_bundle(run.run_dir)
    metrics = run.metrics
    classes, files = list(metrics["classes"]), metrics["files"]
    targets, preds = np.asarray(metrics["targets"]), np.asarray(metrics["predictions"])
    confidence = np.asarray(metrics["confidence"])
    caption = fig.gallery_caption
    wrong_items = [(files[i], caption(classes[targets[i]], classes[preds[i]], confidence[i]),
                    int(preds[i])) for i in wrong]  # fmt: skip
    correct = []
    for c in range(len(classes)):
        hits = np.flatnonzero((targets == c) & (preds == c))
        if len(hits):
            i = hits[np.argmax(confidence[hits])]
            correct.append((files[i], caption(classes[c], classes[c], confidence[i]), c))
    paths = {}
    if wrong_items:
        paths["misclassified_gradcam"] = gradcam_gallery(
            model, info.preprocess, wrong_items, out / "misclassified_gradcam.png",
            title="Grad-CAM of the misclassified images: where the wrong answer came from",
        )  # fmt: skip
    if correct:
        paths["correct_gradcam"] = gradcam_gallery(
            model, info.preprocess, correct, out / "correct_gradcam.png",
            title="Grad-CAM of the most confident correct prediction per class",
        )  # fmt: skip
    return paths


def dataset_figures(run: RunData, layout: DatasetLayout, out: Path) -> dict[str, Path]:
    from marinelife.data import figures as dfig
    from marinelife.data.inspect import _size_sample, read_image_size

    paths = {
        "class_distribution": dfig.plot_class_distribution(layout, out / "class_distribution.png"),
        "split_volumes": dfig.plot_split_volumes(layout, out / "split_volumes.png"),
    }
    if not layout.flat:
        paths["split_distribution"] = dfig.plot_split_distribution(
            layout, out / "split_distribution.png"
        )
    paths["sample_grid"] = dfig.plot_sample_grid(layout, out / "sample_grid.png")
    samples, note = _size_sample(layout)
    sizes = [size for s in samples if (size := read_image_size(s.path)) is not None]
    paths["image_sizes"] = dfig.plot_image_sizes(sizes, out / "image_sizes.png", note=note)
    if run.config is not None and run.info is not None:
        paths["augmented_samples"] = augmented_figure(run, layout, out / "augmented_samples.png")
    return paths


def augmented_figure(run: RunData, layout: DatasetLayout, path: Path, rows: int = 8) -> Path:
    """What the network was fed: the run's own train transform (denoise included)."""
    from marinelife.data import figures as dfig
    from marinelife.data.image_io import load_image_array
    from marinelife.data.transforms import build_eval_transform, build_train_transform
    from marinelife.errors import ImageDecodeError

    config, preprocess = run.config, run.info.preprocess
    train_tf = build_train_transform(config.augment, preprocess, seed=config.seed)
    picked = dfig.pick_samples(layout, 1, seed=config.seed)
    names = list(picked)
    if len(names) > rows:
        rng = np.random.default_rng(config.seed)
        names = [names[i] for i in sorted(rng.choice(len(names), rows, replace=False))]
    images = []
    for name in names:
        for sample in picked[name]:
            try:
                images.append(
                    (name, load_image_array(sample.path, draft_size=preprocess.draft_size))
                )
            except ImageDecodeError:
                continue
    title = (
        f"Training views from this run's pipeline ({preprocess.input_size} px, denoise="
        f"{preprocess.denoise.name}, augmentation {'on' if config.augment.enabled else 'off'})"
    )
    return dfig.plot_augmented_samples(
        images,
        train_tf,
        preprocess.mean,
        preprocess.std,
        path,
        eval_transform=build_eval_transform(preprocess),
        title=title,
    )


def _layout(data: Path | DatasetLayout | None) -> DatasetLayout | None:
    if data is None or isinstance(data, DatasetLayout):
        return data
    return scan_dataset(Path(data).expanduser())


def _img(path: Path, run_dir: Path, embed: bool, alt: str) -> str:
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = path.relative_to(run_dir).as_posix()
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}"></figure>'


def _dataset_sections(
    run: RunData, layout: DatasetLayout | None, out: Path, img: Callable
) -> list[tuple[str, str]]:
    """The training data's section; a dataset that is not the training data gets a section
    titled as such, with its figures in a folder of their own (the training data's stay)."""
    trained_on = (run.metrics or {}).get("data")
    shown: list[tuple[DatasetLayout, str, Path]] = []
    if layout is not None and trained_on and not _same_folder(layout.root, trained_on):
        if Path(trained_on).is_dir():
            shown.append((scan_dataset(Path(trained_on)), "Dataset (training data)", out))
        name = Path(layout.root).resolve().name
        shown.append((layout, f"Dataset {name} (not the training data)",
                      out / "datasets" / safe_name(name)))  # fmt: skip
    elif layout is not None:
        shown.append((layout, "Dataset", out))
    sections = []
    for found, title, folder in shown:
        folder.mkdir(parents=True, exist_ok=True)
        paths = dataset_figures(run, found, folder)
        body = (
            f"<p>{html.escape(str(found.root))}: {plural(len(found.classes), 'class')}, "
            + f"{plural(sum(len(v) for v in found.splits.values()), 'image')}.</p>"
            + "".join(img(paths, k) for k in paths)
        )
        sections.append((title, body))
    return sections


def _same_folder(a: Path | str, b: Path | str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def build_report(
    run_dir: str | Path,
    *,
    data: Path | DatasetLayout | None = None,
    split: str | None = None,
    embed: bool = False,
    gallery: int = GALLERY_MAX,
    gradcam: bool = True,
) -> Path:
    """Write ``RUN_DIR/figures/*.png`` and ``RUN_DIR/report.html``; returns the HTML path.

    ``gradcam``: Grad-CAM galleries when the grad-cam package and the run's weights are present.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, split)
    layout = _layout(data)
    out = run_dir / FIGURES_DIR
    out.mkdir(exist_ok=True)

    def img(paths: dict[str, Path], key: str) -> str:
        return _img(paths[key], run_dir, embed, key.replace("_", " ")) if key in paths else ""

    sections = [("Run", rh.run_table(run))]
    if run.history:
        paths = training_figures(run, out, layout)
        body = rh.TRAINING_NOTE + "".join(
            img(paths, k) for k in ("training_curves", "lr_schedule", "generalization_gap")
        )
        sections.append(("Training", body))
    else:
        sections.append(("Training", "<p>No <code>metrics.csv</code> in this folder.</p>"))
    if run.metrics is not None:
        paths = results_figures(run, out, gallery, gradcam)
        metrics = run.metrics
        classes = list(metrics["classes"])
        targets, preds = np.asarray(metrics["targets"]), np.asarray(metrics["predictions"])
        acc = accuracy_interval(targets, preds)
        f1 = macro_f1_ci(metrics, targets, preds)  # over the classes the data has
        ece = calibration(np.asarray(metrics["confidence"]), preds == targets).ece
        body = (
            rh.headline_table(metrics, acc, f1, ece)
            + img(paths, "confusion_matrix_normalized")
            + img(paths, "confusion_matrix")
            + img(paths, "per_class_accuracy")
            + "<h3>Per-class precision, recall and F1</h3>"
            + rh.per_class_table(metrics)
            + "<h3>Most-confused pairs</h3>"
            + rh.pairs_table(confused_pairs(np.asarray(metrics["confusion_matrix"]), classes))
            + img(paths, "misclassified")
            + img(paths, "misclassified_gradcam")
            + img(paths, "correct_gradcam")
            + img(paths, "reliability")
            + "<h3>Classification report</h3>"
            + f"<pre>{html.escape(metrics.get('classification_report', ''))}</pre>"
        )
        sections.append((f"Results on the {run.split} split", body))
        if metrics.get("by_group"):  # from `evaluate --by-group`
            sections.append(("By site/group", rh.by_group_section(metrics["by_group"])))
    else:
        sections.append(
            (
                "Results",
                f"<p>Not evaluated yet: run <code>marinelife evaluate "
                f"{html.escape(str(run_dir))} --data DATA</code>.</p>",
            )
        )
    for ev in run.evals:  # other datasets: a section each, never mixed with the run's own
        body = eval_section(ev, out / "evals", lambda p, alt: _img(p, run_dir, embed, alt))
        if ev.metrics.get("by_group"):
            body += "<h3>By site/group</h3>" + rh.by_group_section(ev.metrics["by_group"])
        sections.append((eval_title(ev), body))
    sections += _dataset_sections(run, layout, out, img)
    title = f"marinelife report — {run.name}"
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    page = rh.page(title, sections, footer=f"marinelife {__version__}, {stamp}")
    path = run_dir / REPORT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    log.debug("report: %s", path)  # callers print it; INFO would show it twice
    return path


def run_report(
    run_dir: Path,
    *,
    data: Path | None = None,
    split: str | None = None,
    embed: bool = False,
    gradcam: bool = True,
) -> Path:
    if data is not None and not Path(data).exists():
        raise MarineLifeError("does not exist", path=data, fix="pass the dataset folder")
    path = build_report(run_dir, data=data, split=split, embed=embed, gradcam=gradcam)
    print(f"report: {path}")
    return path
