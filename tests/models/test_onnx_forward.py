"""Cache builds through ONNX Runtime: the same numbers as PyTorch, or PyTorch itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame

from marinelife.config import TrainConfig, resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.fit.boundary_cache import split_for_finetune
from marinelife.fit.stages import plan_stages
from marinelife.models import build_classifier
from marinelife.models.onnx_forward import onnx_extract
from marinelife.pipeline.training import build_trainer


@pytest.fixture
def lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_classifier(TrainConfig(architecture="tf_efficientnet_lite0", pretrained=False), 3)
    for module in model.modules():  # input-dependent outputs (fresh BatchNorm is identity)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_pooled_features_and_boundary_activations_match_pytorch(lite0):
    x = torch.randn(5, 3, 48, 48)  # another batch size than the export's probe
    split = split_for_finetune(lite0, 0.3, 48)
    for fn in (lite0.forward_features_pooled, split.bottom):
        extract = onnx_extract(fn, lite0, 48)
        assert extract is not None
        with torch.no_grad():
            expected = fn(x)
        got = extract(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_the_model_and_random_stream_are_left_as_they_were(lite0):
    lite0.train()
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    rng = torch.get_rng_state()
    assert onnx_extract(lite0.forward_features_pooled, lite0, 48) is not None
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random stream is untouched
    assert lite0.training
    assert sum(isinstance(m, Conv2dSame) for m in lite0.modules()) == 5
    for key, value in lite0.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_falls_back_when_export_fails_or_differs(lite0, monkeypatch, caplog):
    def noisy(x: torch.Tensor) -> torch.Tensor:  # not a function of x alone: cannot match
        return lite0.forward_features_pooled(x) + torch.rand(x.shape[0], 1)

    with caplog.at_level(logging.INFO, logger="marinelife.models.onnx_forward"):
        assert onnx_extract(noisy, lite0, 48) is None
        assert "does not match" in caplog.text

        def broken(*args, **kwargs):
            raise RuntimeError("unsupported operator")

        monkeypatch.setattr("marinelife.models.onnx_export.torch_to_onnx", broken)
        assert onnx_extract(lite0.forward_features_pooled, lite0, 48) is None
        assert "unsupported operator" in caplog.text


def _cache_arrays(trainer, cache, monkeypatch, engine: str):
    monkeypatch.setenv("MARINELIFE_CACHE", str(cache / engine))  # no hits across engines
    trainer.config.feature_engine = engine
    features = np.array(trainer.data.features(trainer.data.train_samples, views=1, desc="f"))
    finetune = trainer.data.stage_data(plan_stages(trainer.config)[1])  # the boundary cache
    assert "boundary train" in trainer.data.cache_stats
    activations, _ = next(iter(finetune.val_loader))
    return features, activations.numpy()


def test_cache_builds_agree_between_engines(tiny_dataset, tmp_path, monkeypatch, caplog):
    config = resolve_config(
        "two-stage-lite",
        ["input_size=32", "feature_cache_views=1", "workers=0"],
        {"pretrained": False},
    )
    trainer = build_trainer(scan_dataset(tiny_dataset), config, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="marinelife.fit.stage_data"):
        auto = _cache_arrays(trainer, tmp_path, monkeypatch, "auto")
        assert "ONNX Runtime" in caplog.text
        caplog.clear()
        eager = _cache_arrays(trainer, tmp_path, monkeypatch, "torch")
        assert "ONNX Runtime" not in caplog.text
    for a, b in zip(auto, eager, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_one_export_serves_a_stages_train_and_val_builds(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    config = resolve_config(
        "two-stage-lite",
        ["input_size=32", "feature_cache_views=1", "workers=0"],
        {"pretrained": False},
    )
    trainer = build_trainer(scan_dataset(tiny_dataset), config, tmp_path / "run")
    exports = []

    def counting(*args, **kwargs):
        exports.append(args[0])
        return onnx_extract(*args, **kwargs)

    monkeypatch.setattr("marinelife.fit.stage_data.onnx_extract", counting)
    head, finetune = plan_stages(trainer.config)[:2]
    trainer.data.stage_data(head)  # features + boundary, train and val, in one pass each
    assert len(exports) == 1
    trainer.data.stage_data(finetune)  # cache hits: nothing to export
    assert len(exports) == 1
    # Built on demand (no head stage before it), the boundary cache also exports once.
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache-2"))
    trainer.data.stage_data(finetune)  # boundary train + boundary val
    assert len(exports) == 2
