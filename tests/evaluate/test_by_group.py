"""`evaluate --by-group`: accuracy and macro-F1 per site with intervals, worst groups named,
stored in the metrics JSON and shown by the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_bundle
from marinelife.cli import main
from marinelife.evaluate.by_group import by_group_lines, group_metrics
from marinelife.evaluate.report import build_report

# Synthetic test photos are named ..._test_000K.png: the last digit plays the dive site.
SITE = r"regex:(\d)\.png$"


def test_group_metrics_worst_first_with_intervals():
    names = ["reef"] * 6 + ["wreck"] * 6
    targets = np.array([0, 1, 2, 0, 1, 2] * 2)
    preds = np.concatenate([targets[:6], [1, 2, 0, 0, 0, 0]])  # wreck: one of six right
    rows = group_metrics(names, targets, preds)
    assert [r["group"] for r in rows] == ["wreck", "reef"]
    wreck, reef = rows
    assert wreck["accuracy"]["value"] == pytest.approx(1 / 6) and wreck["num_samples"] == 6
    assert 0 <= wreck["accuracy"]["low"] <= 1 / 6 <= wreck["accuracy"]["high"] < 1
    assert reef["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert reef["macro_f1"]["value"] == pytest.approx(1.0)
    single = group_metrics(["one"], np.array([0]), np.array([0]))[0]
    assert single["accuracy"]["low"] is None  # no interval from one photo, and valid JSON
    json.dumps(single, allow_nan=False)


def test_evaluate_by_group_end_to_end(tiny_dataset, tmp_path, capsys):
    run = make_bundle(tmp_path / "run")
    args = ["evaluate", str(run), "--data", str(tiny_dataset), "--by-group", SITE, "--no-report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "test_metrics.json").read_text())
    by_group = metrics["by_group"]
    assert by_group["source"] == SITE and by_group["num_groups"] == 4  # test_0000 .. test_0003
    rows = by_group["groups"]
    assert sum(r["num_samples"] for r in rows) == metrics["num_samples"] == 16
    accuracy = [r["accuracy"]["value"] for r in rows]
    assert accuracy == sorted(accuracy)  # worst first
    for r in rows:
        files = [f for f in metrics["files"] if f.endswith(f"{r['group']}.png")]
        right = [metrics["predictions"][metrics["files"].index(f)]
                 == metrics["targets"][metrics["files"].index(f)] for f in files]  # fmt: skip
        assert r["accuracy"]["value"] == pytest.approx(np.mean(right))
        assert r["accuracy"]["low"] <= r["accuracy"]["value"] <= r["accuracy"]["high"]
        assert r["macro_f1"]["low"] <= r["macro_f1"]["value"] <= r["macro_f1"]["high"]
    assert by_group["worst"][0] == rows[0]["group"]
    assert f"Worst groups: {rows[0]['group']} (" in out and "By group (" in out
    assert "\n".join(by_group_lines(by_group)) in out

    page = build_report(run, gradcam=False).read_text(encoding="utf-8")
    assert "By site/group" in page and f"<b>{rows[0]['group']}</b>" in page
    assert "accuracy [95% CI]" in page


def test_evaluate_by_group_bad_csv_fails_before_predicting(tiny_dataset, tmp_path, capsys):
    run = make_bundle(tmp_path / "run")
    table = tmp_path / "sites.csv"
    table.write_text("file,group\ntest/synthetic disc/synthetic_disc_test_0000.png,a\n")
    args = ["evaluate", str(run), "--data", str(tiny_dataset), "--by-group", str(table)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no line for 15 photos" in err[0] and str(table) in err[0]
    assert not (run / "test_metrics.json").exists()
