"""`marinelife audit RUN --data DIR`: photos whose label is probably wrong, as a CSV to act on.

Confident learning (the ``cleanlab`` package) needs *out-of-sample* probabilities: a model has
memorised its own training labels. So a ``marinelife cv`` folder is audited over all of train+val
(every photo predicted by the fold that never saw it), and a plain run folder over its held-out
splits only (those evaluated: ``test``, and ``val`` after ``evaluate --split val``). Duplicates
filed under two or more classes are listed too, with or without a model. Nothing is moved or
edited: the results are ``label_issues.csv``, ``duplicates_across_classes.csv`` and a page.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marinelife.data.scan import DatasetLayout, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate import report_html as rh
from marinelife.logutil import plural

GALLERY = 30


@dataclass
class Predictions:
    """Out-of-sample probabilities for labelled files, and where they came from."""

    files: list[str]
    labels: np.ndarray
    probs: np.ndarray
    source: list[str]  # "fold-3", "test", ...


def _load_split(folder: Path, split: str) -> tuple[dict, np.ndarray] | None:
    metrics_path, probs_path = folder / f"{split}_metrics.json", folder / f"{split}_probs.npy"
    if not (metrics_path.is_file() and probs_path.is_file()):
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    probs = np.load(probs_path, allow_pickle=False)
    if probs.shape != (len(metrics["files"]), len(metrics["classes"])):
        return None
    return metrics, probs


def collect_predictions(run_dir: Path) -> tuple[Predictions, list[str]]:
    """Probabilities from a cv folder's folds, or a run's evaluated held-out splits."""
    parts: list[tuple[dict, np.ndarray, str]] = []
    folds = sorted(run_dir.glob("fold-*"), key=lambda p: int(p.name.split("-")[-1]))
    if (run_dir / "folds.csv").is_file() and folds:
        for fold in folds:
            # The held-out fold is `test`, or `val` in a cv run made with --inner-val 0.
            loaded = _load_split(fold, "test") or _load_split(fold, "val")
            if loaded is None:
                raise MarineLifeError(
                    "fold has no held-out predictions",
                    path=fold,
                    fix="finish the cv run first (run it again to resume)",
                )
            parts.append((*loaded, fold.name))
    else:
        for split in ("val", "test"):
            loaded = _load_split(run_dir, split)
            if loaded is not None:
                parts.append((*loaded, split))
    if not parts:
        raise MarineLifeError(
            "has no held-out predictions to audit",
            path=run_dir,
            fix="run `marinelife evaluate RUN --data DATA` (and --split val), or audit a "
            "`marinelife cv` folder to cover the training images",
        )
    classes = list(parts[0][0]["classes"])
    if any(list(m["classes"]) != classes for m, _, _ in parts):
        raise MarineLifeError("folds or splits disagree on the class list", path=run_dir)
    files = [f for m, _, _ in parts for f in m["files"]]
    return Predictions(
        files=files,
        labels=np.concatenate([np.asarray(m["targets"], dtype=int) for m, _, _ in parts]),
        probs=np.concatenate([p for _, p, _ in parts]).astype(np.float64),
        source=[name for m, _, name in parts for _ in m["files"]],
    ), classes


def rank_label_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(flagged mask, label-quality score)``: confident learning's verdict and a 0–1 score
    (self-confidence: the probability of the given label; lowest = most suspicious)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 files sum to 1 ± 1e-7
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    return np.asarray(flagged, dtype=bool), get_label_quality_scores(labels, probs)


def cross_class_duplicates(layout: DatasetLayout) -> list[list[tuple[str, str, str]]]:
    """Groups of identical or near-identical photos filed under two or more classes, as
    ``[(file, split, label), ...]`` per group."""
    from marinelife.data.hashing import find_duplicate_groups

    everything = layout.all_samples()
    groups = find_duplicate_groups([s.path for _, s in everything])
    found = []
    for group in groups:
        members = [
            (str(everything[i][1].path), everything[i][0], everything[i][1].label)
            for i in group.indices
        ]
        if len({label for _, _, label in members}) > 1:
            found.append(members)
    return found


def _require_cleanlab() -> None:
    import importlib.util

    if importlib.util.find_spec("cleanlab") is None:
        raise MarineLifeError("audit needs the cleanlab package", fix="pip install cleanlab")


def run_audit(run_dir: Path, data: Path, *, out: Path | None = None) -> Path:
    """Write the audit under ``out`` (default ``RUN_DIR/audit``); returns the CSV path."""
    from marinelife.evaluate.figures import gallery_caption, plot_image_gallery

    _require_cleanlab()
    run_dir, data = Path(run_dir), Path(data).expanduser()
    layout = scan_dataset(data)
    preds, classes = collect_predictions(run_dir)
    if classes != list(layout.classes):
        raise MarineLifeError(
            "classes differ from the run's",
            path=data,
            fix="audit with the dataset the run was trained on",
        )
    out = out or run_dir / "audit"
    out.mkdir(parents=True, exist_ok=True)
    flagged, score = rank_label_issues(preds.labels, preds.probs)
    duplicates = cross_class_duplicates(layout)
    in_duplicates = {os.path.abspath(f): k + 1 for k, g in enumerate(duplicates) for f, _, _ in g}
    order = np.lexsort((score, ~flagged))  # flagged first, then by score
    rows = []
    for rank, i in enumerate(order, 1):
        suggested = int(preds.probs[i].argmax())
        group = in_duplicates.get(os.path.abspath(preds.files[i]), "")
        rows.append(
            [
                rank,
                preds.files[i],
                preds.source[i],
                classes[preds.labels[i]],
                classes[suggested],
                f"{preds.probs[i, suggested]:.4f}",
                f"{score[i]:.4f}",
                "yes" if flagged[i] else "",
                "yes" if suggested != preds.labels[i] else "",
                group,
            ]
        )
    header = [
        "rank",
        "file",
        "predicted_by",
        "given_label",
        "suggested_label",
        "suggested_prob",
        "label_quality",
        "suspected",
        "model_disagrees",
        "cross_class_duplicate_group",
    ]
    issues_csv = out / "label_issues.csv"
    _write_csv(issues_csv, header, rows)
    dup_rows = [[k + 1, f, split, label] for k, g in enumerate(duplicates) for f, split, label in g]
    _write_csv(out / "duplicates_across_classes.csv", ["group", "file", "split", "label"], dup_rows)
    # Suspected first, then the model's most confident disagreements with the given label.
    disagree = preds.probs.argmax(1) != preds.labels
    suspects = [i for i in order if flagged[i] or disagree[i]][:GALLERY]
    items = [
        (
            preds.files[i],
            gallery_caption(
                classes[preds.labels[i]],
                classes[int(preds.probs[i].argmax())],
                float(preds.probs[i].max()),
            )
            .replace("true:", "given:")
            .replace("pred:", "model:"),
        )
        for i in suspects
    ]
    figures = [
        plot_image_gallery(
            items,
            out / "suspected_label_errors.png",
            title=f"Lowest label quality: {int(flagged.sum())} suspected by confident learning "
            "first, then other disagreements with the model",
        )
    ]
    if duplicates:
        dup_items = [
            (f, f"group {k + 1}: {label}\n({split})")
            for k, g in enumerate(duplicates)
            for f, split, label in g
        ][: GALLERY * 2]
        figures.append(
            plot_image_gallery(
                dup_items,
                out / "duplicates_across_classes.png",
                title="Duplicates filed under different classes",
            )
        )
    shown = rows[: max(int(flagged.sum()), min(GALLERY, int((flagged | disagree).sum())))]
    _write_page(out, run_dir, preds, flagged, shown, duplicates, figures)
    print(
        f"{plural(int(flagged.sum()), 'suspected label error')} among "
        f"{plural(len(preds.files), 'image')} ({', '.join(sorted(set(preds.source)))}); "
        f"{plural(len(duplicates), 'duplicate group')} filed under different classes"
    )
    for row in rows[: min(10, int(flagged.sum()))]:
        print(f"  {row[1]}: labelled {row[3]}, looks like {row[4]} ({row[5]})")
    print(
        f"wrote {issues_csv}: every audited image ranked by label quality, lowest first "
        "(confident learning is cautious on small sets: read past the suspected rows). "
        "No file was changed."
    )
    return issues_csv


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _write_page(out, run_dir, preds, flagged, rows, duplicates, figures) -> None:
    scope = sorted(set(preds.source))
    body = (
        f"<p>{plural(int(flagged.sum()), 'suspected label error')} among "
        f"{plural(len(preds.files), 'image')} "
        f"predicted out-of-sample ({rh.esc(', '.join(scope))}) by {rh.esc(run_dir)}. "
        "Open <code>label_issues.csv</code> to act on them; no file was changed.</p>"
        + "".join(f'<figure><img src="{p.name}" alt="{p.stem}"></figure>' for p in figures)
        + "<h3>Lowest label quality</h3>"
        + rh.table(
            ["rank", "file", "given", "model says", "probability", "label quality", "suspected"],
            [[r[0], r[1], r[3], r[4], r[5], r[6], r[7]] for r in rows],
            numeric={0, 4, 5},
        )
        + f"<h3>Duplicates filed under different classes ({plural(len(duplicates), 'group')})</h3>"
        + rh.table(
            ["group", "file", "split", "label"],
            [[k + 1, f, s, lab] for k, g in enumerate(duplicates) for f, s, lab in g],
        )
    )
    (out / "audit.html").write_text(rh.page("marinelife audit", [("Audit", body)]), "utf-8")
