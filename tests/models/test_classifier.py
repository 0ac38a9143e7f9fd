from __future__ import annotations

import pytest
import torch
from torch import nn

from marinelife.config import TrainConfig
from marinelife.errors import MarineLifeError
from marinelife.models import (
    backbone_blocks,
    build_classifier,
    frozen_batchnorm_eval,
    head_l2_parameters,
    head_parameters,
    set_trainable,
)


def _config(arch: str = "mobilenetv2_100", **kw) -> TrainConfig:
    return TrainConfig(architecture=arch, pretrained=False, **kw)


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("arch", "features"),
    [("resnet18", 512), ("mobilenetv2_100", 1280), ("tf_efficientnet_lite0", 1280)],
)
def test_forward_shapes(arch, features):
    model = build_classifier(_config(arch), 4)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features_pooled(x).shape == (2, features)
        assert model(x).shape == (2, 4)
    assert model.num_features == features
    assert model.weights_info["source"] == "random"


def test_pooled_size_follows_prelogits():
    # MobileNetV3's pooled output is its 1280-wide conv_head, not num_features (960).
    model = build_classifier(_config("mobilenetv3_small_050"), 3)
    model.eval()
    with torch.no_grad():
        assert model.forward_features_pooled(torch.randn(1, 3, 32, 32)).shape[1] == 1024
    assert model.num_features == 1024


def test_mlp_head_from_config():
    config = _config(
        head="mlp", head_hidden=[64, 32], head_dropout=[0.5, 0.4], head_norm_first=False
    )
    model = build_classifier(config, 5)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1280, 64), (64, 32), (32, 5)]
    assert head_l2_parameters(model) == [m.weight for m in linears]
    assert len(head_parameters(model)) == len(list(model.head.parameters()))


def test_set_trainable_fractions():
    model = build_classifier(_config(), 3)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())

    assert set_trainable(model, train_backbone_fraction=0.0) == head
    assert _trainable(model.backbone) == 0

    assert set_trainable(model, train_backbone_fraction=1.0) == total

    partial = set_trainable(model, train_backbone_fraction=0.35)
    assert head < partial < total
    blocks = backbone_blocks(model.backbone)
    flags = [all(p.requires_grad for p in b.parameters()) for b in blocks]
    frozen = [not any(p.requires_grad for p in b.parameters()) for b in blocks]
    # A frozen prefix then a trainable suffix: the top blocks, conv_head/bn2 included.
    first = flags.index(True)
    assert all(frozen[:first]) and all(flags[first:])
    assert len(blocks) - first == 7  # ceil(0.35 * 19) for mobilenetv2_100
    assert model.backbone.conv_head.weight.requires_grad
    assert not model.backbone.conv_stem.weight.requires_grad

    with pytest.raises(MarineLifeError):
        set_trainable(model, train_backbone_fraction=1.5)


def test_blocks_cover_every_backbone_parameter():
    for arch in ("mobilenetv2_100", "resnet18", "convnext_atto"):
        backbone = build_classifier(_config(arch), 2).backbone
        covered = {id(p) for b in backbone_blocks(backbone) for p in b.parameters()}
        assert covered == {id(p) for p in backbone.parameters()}, arch
    resnet = build_classifier(_config("resnet18"), 2).backbone
    assert len(backbone_blocks(resnet)) == 1 + 8  # conv1/bn1, then 2 BasicBlocks x 4 layers


def test_frozen_batchnorm_stats_do_not_change_while_head_trains():
    model = build_classifier(_config(head="mlp", head_hidden=[16], head_dropout=[0.1]), 3)
    set_trainable(model, train_backbone_fraction=0.35)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in bns if not m.weight.requires_grad]
    trainable = [m for m in bns if m.weight.requires_grad]
    assert frozen and trainable
    assert all(not m.training for m in frozen) and all(m.training for m in trainable)
    before = {id(m): m.running_mean.clone() for m in frozen}
    head_bn = next(m for m in model.head if isinstance(m, nn.BatchNorm1d))
    head_before = head_bn.running_mean.clone()

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(before[id(m)], m.running_mean) for m in frozen)
    assert not torch.equal(head_before, head_bn.running_mean)

    # Order does not matter: freezing after train() also puts the frozen BNs in eval.
    set_trainable(model, train_backbone_fraction=0.0)
    assert all(not m.training for m in bns)
    model.train()
    assert all(not m.training for m in bns) and head_bn.training
    model.eval()
    assert not head_bn.training


def test_frozen_batchnorm_eval_helper_on_plain_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False))
    net[1].requires_grad_(False)
    net.train()
    frozen_batchnorm_eval(net)
    assert not net[1].training and net[2].training
