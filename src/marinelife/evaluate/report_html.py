"""HTML pieces for the run report and the comparison page: tables and one offline page.

Plain escaped HTML with inline CSS: no template engine, no scripts, no external resources, so the
page opens anywhere (mail attachment, air-gapped machine) exactly as written.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from marinelife.evaluate.rundata import RunData
from marinelife.evaluate.stats import Interval

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:0 24px 48px;color:#1d2733;line-height:1.45}
h1{font-size:1.6em;margin:24px 0 4px}h2{border-bottom:2px solid #dde3ea;padding-bottom:4px;
margin-top:36px}h3{margin:24px 0 8px}nav a{margin-right:14px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.92em}
th,td{border:1px solid #dde3ea;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f3f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.low td{background:#fff1f0}figure{margin:16px 0}img{max-width:100%;height:auto;
border:1px solid #eef1f4}pre{background:#f6f8fa;padding:12px;overflow-x:auto;font-size:.85em}
.note{color:#5a6877;font-size:.9em}footer{margin-top:40px;color:#8a96a3;font-size:.8em}
"""

TRAINING_NOTE = (
    '<p class="note">Training loss and accuracy are measured on augmented images with dropout '
    "(and, for head-only stages, on cached augmented features); validation on clean images. "
    "Loss includes label smoothing, so it never reaches zero.</p>"
)


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "–" if value is None or value == "" else str(value)


def fmt_interval(ci: Interval | None, digits: int = 3) -> str:
    if ci is None:
        return "–"
    if not (math.isfinite(ci.low) and math.isfinite(ci.high)):
        return fmt(ci.value, digits)
    return f"{ci.value:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {sec:02d}s"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    numeric: set[int] = frozenset(),
    row_classes: Sequence[str] | None = None,
) -> str:
    """An escaped HTML table; columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="n">{esc(v)}</td>' if c in numeric else f"<td>{esc(v)}</td>"
            for c, v in enumerate(row)
        )
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_value_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def augment_summary(augment: Any) -> str:
    if not augment.enabled:
        return "off"
    parts = [
        f"rotation ±{augment.rotation:g}°",
        f"shift ±{augment.shift:g}",
        f"shear {augment.shear:g}",
        f"zoom ±{augment.zoom:g}",
    ]
    flips = [n for n, on in (("horizontal", augment.hflip), ("vertical", augment.vflip)) if on]
    parts.append(f"flips {'+'.join(flips) or 'none'}")
    low, high = augment.brightness
    parts.append(f"brightness {low:g}–{high:g}")
    parts.append(f"channel shift {augment.channel_shift:g}")
    parts.append(f"fill {augment.fill}")
    return ", ".join(parts)


def stages_summary(plan: dict[str, Any] | None, history: Sequence[dict]) -> str:
    """Each stage as training recorded it in ``plan.json``, with the epochs it really ran."""
    stages = (plan or {}).get("stages")
    if not stages:
        return "not recorded (the run predates plan.json)"
    ran: dict[str, int] = {}
    for row in history:
        ran[row["stage"]] = ran.get(row["stage"], 0) + 1
    parts = []
    for name, stage in stages.items():
        fraction = float(stage["backbone_fraction"])
        what = (
            "head only"
            if fraction == 0
            else "whole network"
            if fraction >= 1
            else f"head + top {fraction:.0%} of backbone blocks"
        )
        parts.append(
            f"{name}: {what}, {ran.get(name, 0)}/{stage['epochs']} epochs, lr {stage['lr']:g}, "
            f"warmup {stage['warmup_epochs']:g}, patience {stage['patience'] or 'off'}, "
            f"{stage['steps_per_epoch']} steps per epoch"
        )
    return "; ".join(parts)


def denoise_summary(run: RunData, key: str = "denoise") -> str:
    # key="enhance": the enhancement filter, which has the same name + params shape.
    denoise = getattr(run.info.preprocess, key) if run.info is not None else None
    if denoise is None and run.config is not None:
        denoise = getattr(run.config, key)
    if denoise is None:
        return "–"
    params = ", ".join(f"{k}={v:g}" for k, v in sorted(denoise.params.items()))
    return denoise.name + (f" ({params})" if params else "")


def run_table(run: RunData) -> str:
    config, info, metrics = run.config, run.info, run.metrics or {}
    items: list[tuple[str, Any]] = [("run folder", run.run_dir.resolve())]
    if config is not None:
        weights = config.weights or ("ImageNet" if config.pretrained else "random init")
        items += [
            ("recipe", config.recipe),
            ("backbone", f"{config.architecture} ({weights})"),
            ("head", config.head if config.head == "linear" else f"mlp {config.head_hidden}"),
        ]
    if info is not None:
        pre = info.preprocess
        items.append(("input", f"{pre.input_size} px, {pre.interpolation}, crop {pre.crop_pct:g}"))
    items.append(("denoise", denoise_summary(run)))
    items.append(("enhance", denoise_summary(run, "enhance")))
    if config is not None:
        items += [
            ("augmentation", augment_summary(config.augment)),
            ("class imbalance", f"class_weights={config.class_weights}, sampler={config.sampler}"),
            ("stages", stages_summary(run.plan, run.history)),
            (
                "optimisation",
                f"{config.optimizer}, batch {config.batch_size}, weight decay "
                f"{config.weight_decay:g}, label smoothing {config.label_smoothing:g}, "
                f"seed {config.seed}",
            ),
        ]
    if metrics.get("best_epoch"):
        items.append(("kept epoch", metrics["best_epoch"]))
    if "train_seconds" in metrics:
        items.append(("training time", fmt_seconds(metrics["train_seconds"])))
    if "num_parameters" in metrics:
        items.append(("parameters", f"{metrics['num_parameters']:,}"))
    if config is not None and config.description:
        items.append(("description", config.description))
    return key_value_table(items)


def headline_table(metrics: dict[str, Any], acc: Interval, f1: Interval, ece: float) -> str:
    topk = next((k for k in metrics if k.startswith("top") and k.endswith("_accuracy")), None)
    headers = ["", "accuracy [95% CI]", "macro-F1 [95% CI]"]
    headers += [topk.replace("_accuracy", " accuracy").replace("top", "top-")] if topk else []
    headers += ["ECE", "images"]
    row = ["plain", fmt_interval(acc), fmt_interval(f1)]
    row += [fmt(metrics.get(topk), 3)] if topk else []
    row += [f"{ece:.3f}", metrics.get("num_samples", "–")]
    rows = [row]
    tta = metrics.get("tta")
    if isinstance(tta, dict):
        test = tta.get("mcnemar_vs_plain", {})
        extra = [fmt(tta.get(topk), 3)] if topk else []
        rows.append(
            [
                f"TTA {tta.get('mode')}",
                fmt(tta.get("accuracy"), 3),
                fmt(tta.get("macro_f1"), 3),
                *extra,
                f"McNemar p={fmt(test.get('p_value'), 3)} vs plain",
                f"{tta.get('changed_predictions', '–')} changed",
            ]
        )
    note = (
        '<p class="note">95% confidence intervals: percentile bootstrap over test images '
        "(2000 resamples). ECE: expected calibration error of the top prediction.</p>"
    )
    return table(headers, rows, numeric=set(range(1, len(headers)))) + note


def per_class_table(metrics: dict[str, Any]) -> str:
    per_class = metrics["per_class"]
    rows, marks = [], []
    mean_f1 = sum(v["f1"] for v in per_class.values()) / max(1, len(per_class))
    for name, v in per_class.items():
        rows.append(
            [name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]]
        )
        marks.append("low" if v["f1"] < mean_f1 - 0.15 else "")
    headers = ["class", "precision", "recall (accuracy)", "F1", "images"]
    note = '<p class="note">Shaded: F1 more than 0.15 below the mean.</p>'
    return table(headers, rows, numeric={1, 2, 3, 4}, row_classes=marks) + note


def pairs_table(pairs: Sequence[dict[str, Any]]) -> str:
    if not pairs:
        return "<p>No mistakes.</p>"
    rows = [[p["true"], p["predicted"], p["count"], f"{p['share']:.0%}"] for p in pairs]
    return table(
        ["true class", "predicted as", "images", "share of the class"], rows, numeric={2, 3}
    )


def _stored_interval(ci: dict[str, Any]) -> Interval:
    # The metrics JSON stores a missing interval (a one-photo group) as null.
    nan = float("nan")
    return Interval(ci["value"], nan if ci["low"] is None else ci["low"],
                    nan if ci["high"] is None else ci["high"])  # fmt: skip


def by_group_section(by_group: dict[str, Any]) -> str:
    """The "By site/group" body: worst groups named first, then every group, worst first."""
    rows, marks = [], []
    below = set(by_group.get("clearly_below", []))
    for r in by_group["groups"]:
        rows.append([r["group"], r["num_samples"], r["classes"],
                     fmt_interval(_stored_interval(r["accuracy"])),
                     fmt_interval(_stored_interval(r["macro_f1"]))])  # fmt: skip
        marks.append("low" if r["group"] in below else "")
    worst = ", ".join(f"<b>{esc(name)}</b>" for name in by_group["worst"])
    clearly = (
        f" Clearly below the overall accuracy {by_group['overall_accuracy']:.3f} (the whole "
        f"interval under it, shaded): {esc(', '.join(by_group['clearly_below']))}."
        if below
        else " No group is clearly below the overall accuracy (every interval reaches it)."
    )
    head = (
        f"<p>{by_group['num_groups']} groups from <code>{esc(by_group['source'])}</code>. "
        f"Worst groups: {worst}.{clearly}</p>"
    )
    note = (
        '<p class="note">95% confidence intervals: percentile bootstrap over each group\'s '
        "photos (2000 resamples); macro-F1 averages the classes present in the group.</p>"
    )
    headers = ["group", "images", "classes", "accuracy [95% CI]", "macro-F1 [95% CI]"]
    return head + table(headers, rows, numeric={1, 2, 3, 4}, row_classes=marks) + note


def page(title: str, sections: Sequence[tuple[str, str]], *, footer: str = "") -> str:
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = "".join(f'<a href="#{a}">{esc(name)}</a>' for a, (name, _) in zip(anchors, sections))
    body = "".join(
        f'<section id="{a}"><h2>{esc(name)}</h2>{content}</section>'
        for a, (name, content) in zip(anchors, sections)
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><nav>{nav}</nav>{body}<footer>{esc(footer)}</footer>"
        f"</body></html>\n"
    )
