"""Result figures drawn as their titles say."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marinelife.evaluate.figures import per_class_accuracy_figure, plot_per_class_accuracy


def test_per_class_accuracy_is_worst_first_and_coloured_by_value(tmp_path: Path) -> None:
    classes = ["seal", "octopus", "crab", "eel"]
    recall = [1.00, 0.64, 0.90, 0.64]
    fig = per_class_accuracy_figure(recall, [10, 25, 10, 14], classes)
    ax = fig.axes[0]
    bars = list(ax.patches)
    assert len(bars) == 4
    # Top to bottom on screen (display y of each bar's centre, largest first).
    to_screen = ax.transData.transform
    shown = sorted(bars, key=lambda b: -to_screen((0, b.get_y() + b.get_height() / 2))[1])
    assert [round(b.get_width(), 2) for b in shown] == [0.64, 0.64, 0.90, 1.00]
    ticks = {
        round(t, 6): label.get_text() for t, label in zip(ax.get_yticks(), ax.get_yticklabels())
    }
    names_top_down = [ticks[round(b.get_y() + b.get_height() / 2, 6)] for b in shown]
    assert names_top_down == ["octopus", "eel", "crab", "seal"]  # ties keep class order
    assert "worst first" in ax.get_title()
    colours = [np.asarray(b.get_facecolor()) for b in shown]
    assert np.allclose(colours[0], colours[1])  # equal values, equal colour
    assert not np.allclose(colours[1], colours[2]) and not np.allclose(colours[2], colours[3])
    assert colours[0][0] > colours[0][1]  # 0.64: more red than green
    assert colours[3][1] > colours[3][0]  # 1.00: more green than red
    assert len(fig.axes) == 2  # the colorbar explains the colours
    path = plot_per_class_accuracy(recall, [10, 25, 10, 14], classes, tmp_path / "pc.png")
    assert path.stat().st_size > 0
