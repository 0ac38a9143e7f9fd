"""Feature cache: keyed on everything that changes the numbers, self-checking, exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.data.transforms import build_eval_transform
from marinelife.fit import feature_cache as fc
from marinelife.fit.stages import plan_stages
from marinelife.models import build_classifier
from marinelife.pipeline.training import build_trainer

BASE = {
    "image_hashes": ["a" * 64, "b" * 64],
    "backbone": "tf_efficientnet_lite0",
    "weights_sha": "w1",
    "preprocess": {"input_size": 224, "denoise": {"name": "none", "params": {}}},
    "augment": {"rotation": 25.0, "hflip": True},
    "views": 2,
    "seed": 42,
}


@pytest.mark.parametrize(
    "change",
    [
        {"image_hashes": ["a" * 64, "c" * 64]},
        {"backbone": "tf_efficientnet_lite1"},
        {"weights_sha": "w2"},
        {"preprocess": {"input_size": 240, "denoise": {"name": "none", "params": {}}}},
        {"preprocess": {"input_size": 224, "denoise": {"name": "bilateral", "params": {}}}},
        {"augment": {"rotation": 20.0, "hflip": True}},
        {"views": 3},
        {"seed": 1},
    ],
)
def test_cache_key_changes_with_every_input(change):
    assert fc.cache_key(**{**BASE, **change}) != fc.cache_key(**BASE)


def test_cache_key_is_stable():
    assert fc.cache_key(**BASE) == fc.cache_key(**dict(BASE))
    # Without augmented views, augmentation settings and the seed cannot matter.
    clean = {**BASE, "views": 0}
    assert fc.cache_key(**clean) == fc.cache_key(**{**clean, "augment": {"x": 1}, "seed": 7})


def test_views_by_data_follows_photos_per_class(caplog):
    caplog.set_level("INFO")
    assert fc.views_by_data(2, 10, 5) == 2  # an explicit count is kept, large set or not
    assert fc.views_by_data(0, 10_000, 5) == 0
    assert fc.views_by_data(-1, 23 * 44, 23) == fc.SMALL_SET_VIEWS  # the dev set's size
    assert fc.views_by_data(-1, 23 * 265, 23) == 1  # the full set's size
    assert "265 training photos per class" in caplog.text


def test_recipes_resolve_views_from_the_training_split(tiny_dataset, tmp_path, monkeypatch):
    def views(*overrides):
        config = resolve_config("two-stage-lite", ["input_size=32", "workers=0", *overrides],
                                {"pretrained": False})  # fmt: skip
        return build_trainer(scan_dataset(tiny_dataset), config, tmp_path / "run").data.views

    assert resolve_config("two-stage-lite").feature_cache_views == -1
    assert views() == fc.SMALL_SET_VIEWS  # a few photos per class
    monkeypatch.setattr(fc, "ONE_VIEW_PHOTOS_PER_CLASS", 1)
    assert views() == 1
    assert views("feature_cache_views=3") == 3
    assert views("augment.enabled=false") == 0  # nothing to vary: the clean view only


def _trainer(tiny_dataset, tmp_path):
    config = resolve_config(
        "two-stage-lite",
        ["input_size=32", "feature_cache_views=1", "workers=0"],
        {"pretrained": False},
    )
    return build_trainer(scan_dataset(tiny_dataset), config, tmp_path / "run")


def test_cached_clean_view_equals_full_forward(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    samples = trainer.data.val_samples[:6]
    feats = trainer.data.features(samples, views=1, desc="t")
    assert feats.shape == (6, 2, trainer.model.num_features)
    transform = build_eval_transform(trainer.preprocess)
    from marinelife.data.image_io import load_image_array

    batch = torch.stack([transform(load_image_array(s.path)) for s in samples])
    trainer.model.eval()
    with torch.no_grad():
        direct = trainer.model.forward_features_pooled(batch).numpy()
    assert np.allclose(feats[:, 0], direct, atol=1e-4)
    assert not np.allclose(feats[:, 1], feats[:, 0])  # the augmented view differs


def test_cache_is_reused_and_damage_is_rebuilt(tiny_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    samples = trainer.data.train_samples[:5]
    first = np.array(trainer.data.features(samples, views=1, desc="a"))
    assert trainer.data.cache_stats["a"]["hit"] is False
    again = np.array(trainer.data.features(samples, views=1, desc="b"))
    assert trainer.data.cache_stats["b"]["hit"] is True
    assert np.array_equal(first, again)
    (entry,) = [p for p in fc.cache_dir().iterdir()]
    data = entry / "features.npy"
    raw = bytearray(data.read_bytes())
    raw[-8:] = b"\x7f" * 8  # corrupt the last value
    data.write_bytes(bytes(raw))
    rebuilt = np.array(trainer.data.features(samples, views=1, desc="c"))
    assert trainer.data.cache_stats["c"]["hit"] is False
    assert np.allclose(rebuilt, first, atol=1e-5)
    assert "damaged" in caplog.text
    # A partial entry (data without its meta.json commit marker) is never used.
    (entry / "meta.json").unlink()
    trainer.data.features(samples, views=1, desc="d")
    assert trainer.data.cache_stats["d"]["hit"] is False
    assert json.loads((entry / "meta.json").read_text())["shape"] == [5, 2, 1280]


@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite0", "mobilenetv2_050", "resnet18"])
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_boundary_split_equals_full_forward(architecture, fraction):
    from marinelife.config import TrainConfig
    from marinelife.fit.boundary_cache import split_for_finetune
    from marinelife.models import set_trainable

    config = TrainConfig(architecture=architecture, pretrained=False)
    model = build_classifier(config, 3).eval()
    split = split_for_finetune(model, fraction, 64)
    assert split is not None
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(split.top(split.bottom(x)), model(x), atol=1e-5)
    # The top holds exactly the parameters set_trainable unfreezes (plus the head).
    set_trainable(model, train_backbone_fraction=fraction)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in split.top.parameters()} == trainable


def test_finetune_stage_trains_on_boundary_cache(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    stage = plan_stages(trainer.config)[1]
    data = trainer.data.stage_data(stage)
    assert "boundary train" in trainer.data.cache_stats
    inputs, _ = next(iter(data.train_loader))
    assert inputs.dim() == 4  # activations, not images or pooled features
    assert data.module(inputs).shape == (inputs.shape[0], 4)


def test_head_stage_fills_both_caches_in_one_frozen_pass(tiny_dataset, tmp_path, monkeypatch):
    """With a fine-tune stage ahead, the head stage's build also writes the boundary cache:
    the same entries (keys, values) a separate build gives, and the frozen part runs once."""
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    head, finetune = plan_stages(trainer.config)

    trainer.data.stage_data(head)
    stats = trainer.data.cache_stats
    assert stats["features train"]["one_pass"] and stats["boundary train"]["one_pass"]
    assert len(list(fc.cache_dir().iterdir())) == 4  # features + boundary, train + val
    joint = trainer.data.stage_data(finetune)
    assert trainer.data.cache_stats["boundary train"]["hit"] is True  # nothing rebuilt

    head_data = trainer.data.stage_data(head)  # a cache hit now
    assert trainer.data.cache_stats["features train"]["hit"] is True

    # Separate builds (into a fresh cache) give the same values as the one-pass entries.
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache-separate"))
    split = trainer.data._boundary_split(finetune)
    samples = trainer.data.train_samples
    acts = trainer.data.features(
        samples, views=1, desc="sep", extract_fn=split.bottom,
        item_shape=split.activation_shape, part_sha=split.bottom_sha256(),
    )  # fmt: skip
    feats = trainer.data.features(samples, views=1, desc="f")
    assert np.allclose(np.asarray(joint.train_loader.dataset.features), acts, atol=1e-4)
    assert np.allclose(np.asarray(head_data.train_loader.dataset.features), feats, atol=1e-4)


def test_one_pass_is_skipped_when_an_entry_exists(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    head, _ = plan_stages(trainer.config)
    trainer.data.features(trainer.data.train_samples, views=1, desc="features train")
    trainer.data.stage_data(head)  # the pooled entry is there: no joint build for train
    assert "one_pass" not in trainer.data.cache_stats["features train"]
    assert trainer.data.cache_stats["features val"]["one_pass"]


def test_views_of_a_photo_reuse_one_decode(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    data = trainer.data
    samples = data.train_samples[:3]
    decodes = []
    real = fc.load_image_array
    monkeypatch.setattr(fc, "load_image_array", lambda p, **k: decodes.append(p) or real(p, **k))
    dataset = fc._ViewDataset(samples, ["a", "b", "c"], data.eval_transform,
                              data.train_transform, 2, 0, data.draft)  # fmt: skip
    items = [dataset[i][0] for i in range(len(dataset))]
    assert len(decodes) == 3 and len(items) == 9  # one decode per photo, three views each
    # A fresh dataset per item decodes every view anew: the same views either way.
    args = (samples, ["a", "b", "c"], data.eval_transform, data.train_transform, 2, 0, data.draft)
    again = [fc._ViewDataset(*args)[i][0] for i in range(len(dataset))]
    assert len(decodes) == 12
    assert all(torch.equal(a, b) for a, b in zip(items, again))


def test_a_cache_that_cannot_fit_is_refused_up_front(tiny_dataset, tmp_path, monkeypatch):
    import shutil

    from marinelife.errors import MarineLifeError

    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    trainer = _trainer(tiny_dataset, tmp_path)
    full = shutil.disk_usage(tmp_path)._replace(free=1024)
    monkeypatch.setattr(fc.shutil, "disk_usage", lambda path: full)
    with pytest.raises(MarineLifeError, match="only 0.00 GiB is free") as info:
        trainer.data.features(trainer.data.train_samples, views=1, desc="full disk")
    assert str(fc.cache_dir()) in str(info.value) and "MARINELIFE_CACHE" in str(info.value)
    assert not list(fc.cache_dir().rglob("*.npy"))  # nothing half-written left behind
