"""Results per group (site, dive, camera, day): will the model work at the next site?

One accuracy over the whole test split hides a site where it fails. ``evaluate --by-group``
gives each group's accuracy and macro-F1 with percentile-bootstrap intervals over that group's
photos (:mod:`marinelife.evaluate.stats`) and names the worst groups; the result is stored as
``by_group`` in ``<split>_metrics.json``, which the report shows as "By site/group".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.data.groups import GroupSource, parse_group_source, resolve_groups
from marinelife.evaluate.stats import Interval, accuracy_interval, macro_f1_interval

WORST_NAMED = 3
_PRINTED_ROWS = 20


def _finite(ci: Interval) -> dict[str, float | None]:
    # Strict JSON has no NaN: a one-photo group has no interval, stored as null.
    return {k: (v if math.isfinite(v) else None) for k, v in ci.as_dict().items()}


def group_metrics(
    names: Sequence[str], targets: np.ndarray, preds: np.ndarray, *, seed: int = 0
) -> list[dict[str, Any]]:
    """Per group: images, accuracy and macro-F1 with 95 % intervals, worst (lowest) first.

    Macro-F1 averages over the classes that occur in the group (as truth or prediction), as
    scikit-learn does without ``labels=``: a site without octopuses is not marked down for them.
    """
    targets, preds = np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    names = np.asarray([str(n) for n in names], dtype=object)
    rows = []
    for name in sorted(set(names.tolist())):
        idx = np.flatnonzero(names == name)
        t, p = targets[idx], preds[idx]
        present = np.unique(np.concatenate([t, p]))
        local = {int(c): k for k, c in enumerate(present)}
        t_local = np.array([local[int(c)] for c in t])
        p_local = np.array([local[int(c)] for c in p])
        rows.append(
            {
                "group": name,
                "num_samples": int(len(idx)),
                "classes": int(len(np.unique(t))),
                "accuracy": _finite(accuracy_interval(t, p, seed=seed)),
                "macro_f1": _finite(macro_f1_interval(t_local, p_local, len(present), seed=seed)),
            }
        )
    # Lowest accuracy first; among equals the one with more photos is the surer failure.
    rows.sort(key=lambda r: (r["accuracy"]["value"], r["macro_f1"]["value"], -r["num_samples"]))
    return rows


def by_group_summary(
    source: str | Path | GroupSource,
    root: Path,
    files: Sequence[str | Path],
    targets: np.ndarray,
    preds: np.ndarray,
    *,
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``by_group`` entry of the metrics JSON for ``files`` (inside ``root``).

    ``groups`` skips resolving ``source`` again when the caller already did (to fail early).
    """
    source = parse_group_source(source)
    names = list(groups) if groups is not None else resolve_groups(source, root, files)
    rows = group_metrics(names, targets, preds)
    overall = float(np.mean(np.asarray(targets) == np.asarray(preds))) if len(targets) else 0.0
    below = [
        r["group"]
        for r in rows
        if r["accuracy"]["high"] is not None and r["accuracy"]["high"] < overall
    ]
    return {
        "source": str(source),
        "num_groups": len(rows),
        "overall_accuracy": overall,
        "groups": rows,
        "worst": [r["group"] for r in rows[:WORST_NAMED]],
        "clearly_below": below,
    }


def _interval_text(ci: dict[str, float | None]) -> str:
    if ci["low"] is None or ci["high"] is None:
        return f"{ci['value']:.3f}"
    return f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def by_group_lines(summary: dict[str, Any]) -> list[str]:
    """What ``evaluate --by-group`` prints: the table (worst first) and the worst groups."""
    rows = summary["groups"]
    width = max([5] + [len(r["group"]) for r in rows[:_PRINTED_ROWS]])
    lines = [
        f"By group ({summary['source']}): {summary['num_groups']} groups, worst first",
        f"  {'group':{width}s} {'images':>6s}  accuracy [95% CI]       macro-F1 [95% CI]",
    ]
    for r in rows[:_PRINTED_ROWS]:
        lines.append(
            f"  {r['group']:{width}s} {r['num_samples']:6d}  {_interval_text(r['accuracy']):22s}"
            f"  {_interval_text(r['macro_f1'])}"
        )
    if len(rows) > _PRINTED_ROWS:
        lines.append(f"  ... {len(rows) - _PRINTED_ROWS} more (in the metrics JSON)")
    worst = ", ".join(f"{r['group']} ({r['accuracy']['value']:.3f})" for r in rows[:WORST_NAMED])
    lines.append(f"Worst groups: {worst}")
    if summary["clearly_below"]:
        lines.append(
            f"Clearly below the overall accuracy {summary['overall_accuracy']:.3f} (whole "
            f"interval under it): {', '.join(summary['clearly_below'])}"
        )
    return lines
