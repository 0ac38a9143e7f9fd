from __future__ import annotations

import pytest
import torch
from torch import nn

from marinelife.errors import MarineLifeError
from marinelife.models import build_head


def _layout(head: nn.Module) -> list[tuple]:
    out = []
    for m in head:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("BN", m.num_features))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


def test_linear_head_is_dropout_then_linear():
    head = build_head("linear", 64, 5, hidden=[1024], dropout=[0.5], norm_first=True, drop_rate=0.2)
    assert _layout(head) == [("Dropout", 0.2), ("Linear", 64, 5)]
    assert head(torch.randn(3, 64)).shape == (3, 5)


def test_two_stage_original_mlp_norm_before_activation():
    head = build_head(
        "mlp", 1280, 23, hidden=[1024, 512, 256], dropout=[0.5, 0.4, 0.3], norm_first=True,
        drop_rate=0.0,
    )  # fmt: skip
    assert _layout(head) == [
        ("Linear", 1280, 1024), ("BN", 1024), ("LeakyReLU", 0.01), ("Dropout", 0.5),
        ("Linear", 1024, 512), ("BN", 512), ("LeakyReLU", 0.01), ("Dropout", 0.4),
        ("Linear", 512, 256), ("BN", 256), ("LeakyReLU", 0.01), ("Dropout", 0.3),
        ("Linear", 256, 23),
    ]  # fmt: skip


def test_baseline_original_mlp_activation_before_norm():
    head = build_head(
        "mlp", 1280, 23, hidden=[1024, 512, 256, 128], dropout=[0.5, 0.4, 0.3, 0.2],
        norm_first=False, drop_rate=0.0,
    )  # fmt: skip
    assert _layout(head) == [
        ("Linear", 1280, 1024), ("LeakyReLU", 0.01), ("BN", 1024), ("Dropout", 0.5),
        ("Linear", 1024, 512), ("LeakyReLU", 0.01), ("BN", 512), ("Dropout", 0.4),
        ("Linear", 512, 256), ("LeakyReLU", 0.01), ("BN", 256), ("Dropout", 0.3),
        ("Linear", 256, 128), ("LeakyReLU", 0.01), ("BN", 128), ("Dropout", 0.2),
        ("Linear", 128, 23),
    ]  # fmt: skip
    head.train()
    assert head(torch.randn(4, 1280)).shape == (4, 23)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "conv"},
        {"kind": "mlp", "hidden": [8, 4], "dropout": [0.5]},
        {"kind": "mlp", "hidden": [0], "dropout": [0.5]},
        {"kind": "linear", "num_classes": 0},
    ],
)
def test_bad_head_settings_are_user_errors(kwargs):
    args = {"kind": "mlp", "in_features": 16, "num_classes": 3, "hidden": [8], "dropout": [0.1],
            "norm_first": True, "drop_rate": 0.0}  # fmt: skip
    args.update(kwargs)
    kind, in_features, num_classes = (
        args.pop("kind"),
        args.pop("in_features"),
        args.pop("num_classes"),
    )
    with pytest.raises(MarineLifeError):
        build_head(kind, in_features, num_classes, **args)
