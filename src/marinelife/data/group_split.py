"""Splits of whole groups (sites, dives, days), and how far each split's class mix drifts.

A site holds many species, so the per-class placement of :func:`marinelife.data.split.assign_groups`
cannot place it. Here each group is one unit with a class-count vector, placed greedily (largest
first, several jittered orders tried, the closest result kept) into the split where it brings the
class counts closest to their targets (per class and in total). Like sklearn's
StratifiedGroupKFold, but with train/val/test fractions instead of equal folds, and with two
repairs the greedy pass alone does not guarantee: every split gets a group, and every class is in
train wherever a group can be moved there (a class the model never trained on cannot be tested).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.data.scan import SPLITS
from marinelife.errors import MarineLifeError

REPORT_FILE = "split_report.json"  # in DST: the class mix of every split (always written)
GROUPS_FILE = "groups.csv"  # in DST with --groups: file,group, DST-relative, for cv/evaluate


# Greedy passes tried per split (different orders, the best kept); fewer when there are many
# groups, where one pass is already close and each costs a step per group.
_TRIALS = 16
_TRIAL_STEPS = 100_000


def _cost(filled: np.ndarray, target: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Squared distance of each split's counts (rows) to its targets.

    Each class counts relative to its own size (a rare species weighs as much as a common one);
    the last column is the split's total, so the split sizes are kept on target too.
    """
    d = ((filled - target) / scale) ** 2
    return d[..., :-1].mean(-1) + d[..., -1]


def _greedy(
    order: Sequence[int], counts: np.ndarray, target: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, float]:
    """Each unit in ``order`` into the split whose cost it lowers most; (placement, total cost)."""
    filled = np.zeros_like(target)
    place = np.zeros(len(counts), dtype=int)
    weight = np.append(np.full(len(scale) - 1, 1.0 / (len(scale) - 1)), 1.0) / scale**2
    for u in order:
        add = counts[u]
        # _cost(filled + add) - _cost(filled), expanded: (f + a - t)^2 - (f - t)^2 = a(a + 2(f - t))
        k = int(np.argmin((add * (add + 2 * (filled - target))) @ weight))
        place[u] = k
        filled[k] += counts[u]
    return place, float(_cost(filled, target, scale).sum())


def assign_units(counts: np.ndarray, fractions: dict[str, float], *, seed: int) -> list[str]:
    """Split name per unit from its ``(units, classes)`` image counts; deterministic per seed.

    Large units go first (they are the hard ones to fit), jittered per trial so that the seed
    matters and several near-largest-first orders compete; the closest result wins.
    """
    counts = np.asarray(counts, dtype=np.float64)
    active = [s for s in SPLITS if fractions.get(s, 0) > 0]
    units = len(counts)
    if units < len(active):
        raise MarineLifeError(
            f"only {units} group{'s' if units != 1 else ''} (after joining duplicates) for "
            f"{len(active)} splits ({'/'.join(active)}): every split needs a whole group",
            fix="use finer groups, or --val 0 / --test 0 to drop a split",
        )
    totals = np.append(counts.sum(0), counts.sum())  # per class, then all images
    target = np.stack([fractions[s] * totals for s in active])
    scale = np.maximum(totals, 1.0)
    with_total = np.hstack([counts, counts.sum(1, keepdims=True)])
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, min(_TRIALS, _TRIAL_STEPS // units))):
        order = np.argsort(-with_total[:, -1] * rng.uniform(0.5, 1.5, units), kind="stable")
        place, cost = _greedy(order, with_total, target, scale)
        if best is None or cost < best[1]:
            best = (place, cost)
    place = best[0]
    _repair(place, with_total, len(active), "train" in active)
    return [active[k] for k in place]


def _repair(place: np.ndarray, counts: np.ndarray, splits: int, has_train: bool) -> None:
    """Every split at least one unit; then every class in train (split 0) where possible."""

    def movable(k: int) -> bool:
        return int(np.sum(place == k)) > 1

    for k in range(splits):
        if not np.any(place == k):
            donors = [u for u in np.argsort(counts[:, -1], kind="stable") if movable(place[u])]
            place[donors[0]] = k  # more units than splits, so a donor exists
    if not has_train:
        return
    for c in range(counts.shape[1] - 1):
        if counts[:, c].sum() == 0 or np.any(counts[place == 0, c] > 0):
            continue
        holders = [u for u in np.argsort(counts[:, -1], kind="stable")
                   if counts[u, c] > 0 and movable(place[u])]  # fmt: skip
        if holders:
            place[holders[0]] = 0


def split_by_groups(
    labels: Sequence[str], units: Sequence[int], *, val: float, test: float, seed: int
) -> list[str]:
    """Split name per item: items of one unit (``merge_groups`` id) always share a split."""
    classes = sorted(set(labels))
    col = {c: i for i, c in enumerate(classes)}
    ids = sorted(set(units))
    row = {u: i for i, u in enumerate(ids)}
    counts = np.zeros((len(ids), len(classes)))
    for label, unit in zip(labels, units):
        counts[row[unit], col[label]] += 1
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    placed = assign_units(counts, fractions, seed=seed)
    return [placed[row[u]] for u in units]


def class_mix(split_of: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Each split's class shares against the whole: total variation distance (half the summed
    absolute share differences; 0 identical, 1 disjoint) and the largest single difference."""
    pairs = [(s, c) for s, c in zip(split_of, labels) if s is not None]
    classes = sorted({c for _, c in pairs})
    whole = Counter(c for _, c in pairs)
    total = max(1, sum(whole.values()))
    overall = {c: whole[c] / total for c in classes}
    splits: dict[str, Any] = {}
    for name in SPLITS:
        have = Counter(c for s, c in pairs if s == name)
        n = sum(have.values())
        if not n:
            continue
        share = {c: have[c] / n for c in classes}
        diff = {c: share[c] - overall[c] for c in classes}
        worst = max(classes, key=lambda c: abs(diff[c]))
        splits[name] = {
            "images": n,
            "tvd": round(0.5 * sum(abs(d) for d in diff.values()), 6),
            "max_abs_diff": round(abs(diff[worst]), 6),
            "worst_class": worst,
            "class_share": {c: round(v, 6) for c, v in share.items()},
        }
    return {"overall_class_share": {c: round(v, 6) for c, v in overall.items()}, "splits": splits}


def class_mix_lines(mix: dict[str, Any]) -> list[str]:
    """The summary's class-mix block: one line per split."""
    lines = ["Class mix against the whole (total variation distance, 0 = identical):"]
    for name, s in mix["splits"].items():
        lines.append(f"  {name:5s} TVD {s['tvd']:.3f}, largest gap {100 * s['max_abs_diff']:.1f} "
                     f"points ({s['worst_class']})")  # fmt: skip
    return lines


def missing_class_lines(split_of: Sequence[str | None], labels: Sequence[str]) -> list[str]:
    """Classes that no group brought into a split (only possible with --groups)."""
    present: dict[str, set[str]] = {}
    for s, c in zip(split_of, labels):
        if s is not None:
            present.setdefault(c, set()).add(s)
    used = {s for s in split_of if s is not None}
    lines = []
    for c in sorted(present):
        absent = [s for s in SPLITS if s in used and s not in present[c]]
        if absent:
            lines.append(f"class '{c}' has no photos in {'/'.join(absent)}: all its groups "
                         "are elsewhere")  # fmt: skip
    return lines


def split_components(
    components: Sequence[Sequence[int]],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    val: float,
    test: float,
    seed: int,
) -> list[str]:
    """Split name per duplicate component (one label each), user groups and copies kept whole.

    ``labels`` and ``groups`` are per image; ``components`` index into them.
    """
    from marinelife.data.groups import merge_groups

    items = [i for comp in components for i in comp]
    comp_of = [k for k, comp in enumerate(components) for _ in comp]
    units = merge_groups(comp_of, [groups[i] for i in items])
    per_item = split_by_groups([labels[i] for i in items], units, val=val, test=test, seed=seed)
    result = [""] * len(components)
    for k, name in zip(comp_of, per_item):
        result[k] = name
    return result


def groups_per_split(split_of: Sequence[str | None], groups: Sequence[str]) -> dict[str, int]:
    """How many distinct user groups each split received."""
    seen: dict[str, set[str]] = {}
    for s, g in zip(split_of, groups):
        if s is not None:
            seen.setdefault(s, set()).add(g)
    return {s: len(seen[s]) for s in SPLITS if s in seen}


def split_report(
    source: object | None,
    split_of: Sequence[str | None],
    labels: Sequence[str],
    groups: Sequence[str] | None,
) -> dict[str, Any]:
    """What ``split_report.json`` holds: the group source, class mix, groups per split."""
    report: dict[str, Any] = {"groups": str(source) if source is not None else None}
    report.update(class_mix(split_of, labels))
    if groups is not None:
        report["groups_per_split"] = groups_per_split(split_of, groups)
    return report


def groups_csv_text(rows: Sequence[tuple[str, str]]) -> str:
    """``groups.csv``: one ``file,group`` line per placed photo, ``file`` relative to DST."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("file", "group"))
    writer.writerows(rows)
    return buffer.getvalue()


def summary_lines(
    report: dict[str, Any], split_of: Sequence[str | None], labels: Sequence[str], dst: Path
) -> list[str]:
    """The split summary's lines about groups and the class mix."""
    lines = []
    if report.get("groups_per_split"):
        per = ", ".join(f"{s} {n}" for s, n in report["groups_per_split"].items())
        lines.append(f"Groups from --groups {report['groups']} stay whole: {per} "
                     f"(listed in {dst / GROUPS_FILE}).")  # fmt: skip
        lines += [f"Note: {line}." for line in missing_class_lines(split_of, labels)]
    return [*lines, *class_mix_lines(report), f"(details in {dst / REPORT_FILE})"]
