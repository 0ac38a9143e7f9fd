"""A training run calibrates rejection from its cached val pass, as if it had read the photos."""

from __future__ import annotations

import json

import pytest

from marinelife.config import resolve_config
from marinelife.data.scan import scan_dataset
from marinelife.infer.rejection import ensure_rejection
from marinelife.pipeline.training import train

TINY = ["epochs=2", "input_size=32", "batch_size=8", "feature_cache_views=1", "workers=0",
        "report=false"]  # fmt: skip


@pytest.mark.parametrize("finetune", [0, 1])
def test_cached_val_pass_calibrates_like_the_photos(finetune, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    layout = scan_dataset(tiny_dataset)
    config = resolve_config(
        "two-stage-lite", [*TINY, f"finetune_epochs={finetune}", "finetune_patience=0"],
        {"pretrained": False},
    )  # fmt: skip
    run = tmp_path / "run"
    calls = []
    import marinelife.fit.trainer as trainer_module

    original = trainer_module.Trainer.cached_val_logits

    def spy(self):
        module = self.last_stage_data.module
        module.train(True)
        logits = original(self)
        assert module.training  # the val pass puts the training flag back
        calls.append(logits)
        return logits

    monkeypatch.setattr(trainer_module.Trainer, "cached_val_logits", spy)
    run.mkdir()
    train(layout, config, run_dir=run)
    (logits,) = calls
    assert logits is not None and logits.shape == (len(layout.samples("val")), len(layout.classes))
    from_cache = json.loads((run / "model.json").read_text())["rejection"]
    # The same calibration from the photos through the saved bundle (eager PyTorch).
    from_photos = ensure_rejection(run, layout, force=True)
    assert from_cache["num_images"] == from_photos["num_images"]
    for key in ("threshold", "energy_threshold"):
        assert from_cache[key] == pytest.approx(from_photos[key], rel=1e-4, abs=1e-5)
