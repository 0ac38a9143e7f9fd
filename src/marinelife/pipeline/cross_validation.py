"""k-fold cross-validation over train+val (`marinelife cv`, ``ml.cv``).

Folds are stratified by class and keep duplicate groups (exact and near-duplicate photos, from
``data.hashing.group_ids``) inside one fold, so no photo is ever tested against its own copy.
Each fold trains a full run folder; the held-out fold is that run's ``test`` split, and early
stopping uses an inner, equally duplicate-aware validation split carved from the training folds
(``--inner-val 0`` uses the held-out fold for both: faster, but optimistic). The test split, if
any, is left untouched. ``groups`` (sites, dives, days: :mod:`marinelife.data.groups`) are joined
with the duplicate groups, so no site is ever both trained on and held out in one fold.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from marinelife.config import TrainConfig
from marinelife.data.groups import GroupSource, merge_groups, parse_group_source, resolve_groups
from marinelife.data.hashing import group_ids
from marinelife.data.scan import DatasetLayout, Sample, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate import report_html as rh
from marinelife.evaluate.metrics import classification_metrics
from marinelife.pipeline.training import train

log = logging.getLogger(__name__)


def _split_groups(
    labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[np.ndarray]:
    """Held-out indices of each of ``n_splits`` stratified, group-preserving folds."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class has only N members": we warn about that ourselves.
        warnings.simplefilter("ignore", UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def assign_folds(
    labels: Sequence[int], groups: Sequence[int], folds: int, *, seed: int = 42
) -> np.ndarray:
    """Fold index (0..folds-1) per item: stratified by label, every group inside one fold."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(labels) != len(groups):
        raise ValueError("labels and groups differ in length")
    if folds < 2:
        raise MarineLifeError(f"--folds {folds}: cross-validation needs at least 2 folds")
    distinct = len(np.unique(groups))
    if distinct < folds:
        raise MarineLifeError(
            f"only {distinct} distinct images (after grouping duplicates) for {folds} folds",
            fix="use fewer --folds or add images",
        )
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if smallest < folds:
        log.warning("a class has only %d images for %d folds: some folds will lack it",
                    smallest, folds)  # fmt: skip
    fold = np.full(len(labels), -1)
    for k, test in enumerate(_split_groups(labels, groups, folds, seed)):
        fold[test] = k
    return fold


def cv_pool(layout: DatasetLayout) -> list[Sample]:
    """The images cross-validation rotates: train+val of a split dataset, or a flat folder."""
    if layout.flat:
        return list(layout.samples("all"))
    return list(layout.samples("train")) + list(layout.splits.get("val", []))


def fold_layout(
    layout: DatasetLayout,
    pool: Sequence[Sample],
    fold: np.ndarray,
    k: int,
    *,
    labels: np.ndarray,
    groups: np.ndarray,
    inner_val: float,
    seed: int,
) -> DatasetLayout:
    """Fold ``k`` held out as ``test``; the rest split into train and an inner ``val``."""
    held = np.flatnonzero(fold == k)
    rest = np.flatnonzero(fold != k)
    pick = lambda idx: [pool[i] for i in idx]  # noqa: E731
    if inner_val <= 0:
        splits = {"train": pick(rest), "val": pick(held)}
    else:
        n_splits = max(2, int(round(1.0 / inner_val)))
        if len(np.unique(groups[rest])) < n_splits:
            raise MarineLifeError("too few images for an inner validation split",
                                  fix="use --inner-val 0 or fewer --folds")  # fmt: skip
        inner = _split_groups(labels[rest], groups[rest], n_splits, seed + k)[0]
        val = rest[inner]
        train = np.setdiff1d(rest, val)
        splits = {"train": pick(train), "val": pick(val), "test": pick(held)}
    return DatasetLayout(root=layout.root, classes=list(layout.classes), splits=splits)


def _fold_metrics(run_dir: Path) -> dict[str, Any]:
    for name in ("test", "val"):
        path = run_dir / f"{name}_metrics.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise MarineLifeError("fold finished without metrics", path=run_dir)


def run_cv(
    data: Path,
    config: TrainConfig,
    *,
    folds: int = 5,
    out_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    inner_val: float = 0.15,
    groups: str | Path | GroupSource | None = None,
) -> dict[str, Any]:
    """Train one run per fold under ``out_dir`` and write ``cv_summary.json`` + ``cv_report.html``.

    Folds whose run folder already holds metrics are reused, so an interrupted cv continues.
    ``groups``: a group source; every group stays inside one fold (and one inner split).
    """
    if not 0.0 <= inner_val < 0.5:
        raise MarineLifeError(f"--inner-val {inner_val}: must be in [0, 0.5)")
    source = parse_group_source(groups) if groups is not None else None
    layout = scan_dataset(Path(data).expanduser())
    pool = cv_pool(layout)
    index = layout.class_to_index
    labels = np.array([index[s.label] for s in pool])
    user = resolve_groups(source, layout.root, [s.path for s in pool]) if source else None
    duplicates = group_ids([s.path for s in pool])
    groups = np.asarray(duplicates)
    if user is not None:
        groups = np.asarray(merge_groups(duplicates, user))
        if len(np.unique(groups)) < folds:
            raise MarineLifeError(f"--groups {source}: only {len(np.unique(groups))} groups "
                                  f"(duplicates joined) for {folds} folds",
                                  fix="use fewer --folds or finer groups")  # fmt: skip
    fold = assign_folds(labels, groups, folds, seed=config.seed)
    out = out_dir or runs_dir / f"cv-{config.recipe}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    _write_assignment(out / "folds.csv", pool, duplicates, fold,
                      resuming=any(out.glob("fold-*")), user=user)  # fmt: skip
    results = []
    for k in range(folds):
        run_dir = out / f"fold-{k + 1}"
        done = (run_dir / "test_metrics.json").is_file() or (
            inner_val <= 0 and (run_dir / "val_metrics.json").is_file()
        )
        if done:
            log.info("fold %d/%d: reusing %s", k + 1, folds, run_dir)
        else:
            log.info("fold %d/%d: training into %s", k + 1, folds, run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            layout_k = fold_layout(layout, pool, fold, k, labels=labels, groups=groups,
                                   inner_val=inner_val, seed=config.seed)  # fmt: skip
            train(layout_k, config, run_dir=run_dir)
        results.append(_fold_metrics(run_dir))
    summary = summarise(results, list(layout.classes), inner_val=inner_val, recipe=config.recipe)
    summary["groups"] = str(source) if source else None
    (out / "cv_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    report = write_cv_report(summary, out)
    print(f"{folds}-fold cv of {config.recipe}: accuracy {summary['accuracy']['mean']:.4f} ± "
          f"{summary['accuracy']['std']:.4f}, macro-F1 {summary['macro_f1']['mean']:.4f} ± "
          f"{summary['macro_f1']['std']:.4f}")  # fmt: skip
    print(f"report: {report}")
    return summary


def _write_assignment(
    path: Path, pool: Sequence[Sample], groups, fold, *, resuming: bool, user=None
) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # Without --groups the file stays byte-identical to older versions, so their folds resume.
    writer.writerow(["file", "label", "duplicate_group", "fold"] + (["group"] if user else []))
    for i, (s, g, f) in enumerate(zip(pool, groups, fold)):
        writer.writerow([str(s.path), s.label, int(g), int(f) + 1] + ([user[i]] if user else []))
    text = buffer.getvalue()
    # Finished folds are reused only when they were cut exactly the same way.
    if resuming and path.is_file() and path.read_text(encoding="utf-8") != text:
        raise MarineLifeError("holds folds cut from other data or settings", path=path.parent,
                              fix="choose another --name")  # fmt: skip
    path.write_text(text, encoding="utf-8")


def summarise(
    results: Sequence[dict[str, Any]], classes: list[str], *, inner_val: float, recipe: str
) -> dict[str, Any]:
    """Mean ± std (over folds, ddof=1) and the pooled out-of-fold metrics."""
    acc = np.array([r["accuracy"] for r in results])
    f1 = np.array([r["macro_f1"] for r in results])
    std = lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
    targets = np.concatenate([r["targets"] for r in results]).astype(int)
    preds = np.concatenate([r["predictions"] for r in results]).astype(int)
    one_hot = np.eye(len(classes))[preds]  # predictions suffice for the pooled matrix and F1
    oof = classification_metrics(targets, one_hot, classes)
    return {
        "recipe": recipe,
        "folds": len(results),
        "inner_val": inner_val,
        "accuracy": {"mean": float(acc.mean()), "std": std(acc), "per_fold": acc.tolist()},
        "macro_f1": {"mean": float(f1.mean()), "std": std(f1), "per_fold": f1.tolist()},
        "fold_sizes": [int(r["num_samples"]) for r in results],
        "out_of_fold": {
            k: oof[k]
            for k in ("accuracy", "macro_f1", "confusion_matrix", "per_class", "num_samples")
        },  # fmt: skip
        "classes": classes,
    }


def write_cv_report(summary: dict[str, Any], out: Path) -> Path:
    from marinelife.evaluate import figures as fig

    figures = out / "figures"
    classes = summary["classes"]
    oof = summary["out_of_fold"]
    matrix = np.asarray(oof["confusion_matrix"])
    names = [f"fold {k + 1}" for k in range(summary["folds"])]
    acc, f1 = summary["accuracy"], summary["macro_f1"]
    paths = [
        fig.plot_metric_bars(
            names, {"accuracy": [(v, v, v) for v in acc["per_fold"]],
                    "macro-F1": [(v, v, v) for v in f1["per_fold"]]},
            figures / "cv_folds.png", title="Held-out accuracy and macro-F1 per fold",
        ),
        fig.plot_confusion_matrix(matrix, classes, figures / "oof_confusion_matrix.png",
                                  normalise=True, name="Out-of-fold confusion matrix"),
        fig.plot_confusion_matrix(matrix, classes, figures / "oof_confusion_matrix_counts.png",
                                  name="Out-of-fold confusion matrix"),
    ]  # fmt: skip
    rows = [[n, f"{a:.4f}", f"{b:.4f}", size] for n, a, b, size
            in zip(names, acc["per_fold"], f1["per_fold"], summary["fold_sizes"])]  # fmt: skip
    rows.append(["mean ± std", f"{acc['mean']:.4f} ± {acc['std']:.4f}",
                 f"{f1['mean']:.4f} ± {f1['std']:.4f}", sum(summary["fold_sizes"])])  # fmt: skip
    links = "".join(
        f'<li><a href="fold-{k + 1}/report.html">fold {k + 1}</a></li>'
        for k in range(summary["folds"]) if (out / f"fold-{k + 1}" / "report.html").is_file()
    )  # fmt: skip
    how = ("early stopping on an inner validation split of the training folds "
           f"({summary['inner_val']:.0%})" if summary["inner_val"] > 0 else
           "early stopping on the held-out fold itself (optimistic)")  # fmt: skip
    if summary.get("groups"):
        how += f"; every group of <code>{rh.esc(summary['groups'])}</code> inside one fold"
    body = (
        rh.table(["fold", "accuracy", "macro-F1", "held-out images"], rows, numeric={1, 2, 3})
        + f'<p class="note">Stratified, duplicate-aware folds over train+val; {how}. '
        f"Pooled out-of-fold accuracy {oof['accuracy']:.4f}, macro-F1 {oof['macro_f1']:.4f} "
        f"over {oof['num_samples']} images.</p>"
        + "".join(f'<figure><img src="figures/{p.name}" alt="{p.stem}"></figure>' for p in paths)
        + (f"<h3>Fold reports</h3><ul>{links}</ul>" if links else "")
    )
    path = out / "cv_report.html"
    title = f"marinelife {summary['folds']}-fold cross-validation — {summary['recipe']}"
    path.write_text(rh.page(title, [("Folds", body)]), encoding="utf-8")
    return path
