"""Predictor: same answers as the network, top-k, flip TTA, rejection calibrated on val."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from marinelife.data.preprocess import load_and_preprocess
from marinelife.data.scan import scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.infer.predictor import Predictor
from marinelife.infer.rejection import (
    UNKNOWN,
    calibrate_rejection,
    ensure_rejection,
    threshold_at_tpr,
)
from marinelife.models.bundle import ModelInfo, load_bundle, read_model_info
from marinelife.models.runtime import TorchBackend


def test_predictions_match_the_network_after_reload(tiny_bundle, tiny_dataset):
    files = sorted((tiny_dataset / "test").rglob("*.png"))[:6]
    predictor = Predictor.load(tiny_bundle)
    network, info = load_bundle(tiny_bundle)
    batch = torch.stack([load_and_preprocess(f, info.preprocess) for f in files])
    with torch.no_grad():
        expected = torch.softmax(network(batch), 1).numpy()
    results = [pred for _, pred in predictor.predict_files(files, top_k=3, batch_size=4)]
    assert [r.path for r in results] == [str(f) for f in files]
    for row, result in zip(expected, results):
        assert result.label == info.classes[int(row.argmax())]
        assert result.confidence == pytest.approx(float(row.max()), abs=1e-5)
        probs = [p for _, p in result.top_k]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert set(result.scores) == {"max_softmax", "energy"}
    # The model id is the weights' digest: stable across reloads.
    assert Predictor.load(tiny_bundle).model_id == predictor.model_id


def test_flip_tta_averages_the_mirror_image(tiny_bundle):
    plain = Predictor.load(tiny_bundle)
    flip = Predictor.load(tiny_bundle, tta="flip")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = (plain.logits(x) + plain.logits(x[..., ::-1].copy())) / 2
    np.testing.assert_allclose(flip.logits(x), expected, atol=1e-5)
    with pytest.raises(MarineLifeError, match="tta"):
        Predictor.load(tiny_bundle, tta="rotate")


def test_bad_files_are_reported_in_place(tiny_bundle, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (10, 120, 200)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = list(Predictor.load(tiny_bundle).predict_files([good, bad, good], batch_size=2))
    assert [p for p, _ in out] == [good, bad, good]
    assert isinstance(out[1][1], MarineLifeError) and "bad.jpg" in str(out[1][1])
    assert out[0][1].label == out[2][1].label


class _ColourModel(torch.nn.Module):
    """Logits from the mean colour: red, green and blue photos are confidently their class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        return 8.0 * (mean - mean.mean(dim=1, keepdim=True))


def _colour_images(folder, rng, count):
    folder.mkdir(parents=True)
    for c, name in enumerate(["red", "green", "blue"]):
        for i in range(count):
            pixels = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
            pixels[..., c] = rng.integers(150, 256, (40, 40))
            sub = folder / name
            sub.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(sub / f"{i}.png")


def test_rejection_keeps_the_stated_tpr_and_flags_noise(tiny_bundle, tmp_path):
    rng = np.random.default_rng(1)
    _colour_images(tmp_path / "val", rng, 20)
    info, _ = read_model_info(tiny_bundle)
    info = ModelInfo(**{**info.__dict__, "classes": ["blue", "green", "red"][::-1]})
    val = sorted((tmp_path / "val").rglob("*.png"))
    rejection = calibrate_rejection(_ColourModel(), val, info.preprocess, tpr=0.9)
    assert rejection["tpr"] == 0.9 and rejection["num_images"] == 60
    info.rejection = rejection
    predictor = Predictor(TorchBackend(_ColourModel()), info)
    results = [r for _, r in predictor.predict_files(val)]
    accepted = sum(not r.rejected for r in results)
    assert accepted / len(val) >= 0.9
    assert accepted <= len(val) - int(0.1 * len(val))  # the threshold is no looser than needed
    assert all(r.label == r.top_k[0][0] for r in results if not r.rejected)
    noise = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(noise)
    [(_, verdict)] = predictor.predict_files([noise])
    assert verdict.label == UNKNOWN and verdict.rejected
    assert verdict.top_k[0][0] in info.classes  # the best guess is still reported
    predictor.reject = False
    [(_, kept)] = predictor.predict_files([noise])
    assert kept.label != UNKNOWN
    # The energy score works the same way.
    info.rejection = {**rejection, "score": "energy"}
    [(_, by_energy)] = Predictor(TorchBackend(_ColourModel()), info).predict_files([noise])
    assert by_energy.rejected


@pytest.mark.parametrize("n, tpr", [(20, 0.95), (100, 0.95), (7, 0.5), (10, 1.0)])
def test_threshold_accepts_at_least_the_tpr(n, tpr):
    scores = np.random.default_rng(n).random(n)
    t = threshold_at_tpr(scores, tpr)
    assert (scores >= t).mean() >= tpr
    assert (scores > t).mean() < tpr or tpr == 1.0 or (scores >= t).all()


def test_ensure_rejection_writes_model_json(tiny_bundle, tiny_dataset):
    layout = scan_dataset(tiny_dataset)
    rejection = ensure_rejection(tiny_bundle, layout)
    stored = json.loads((tiny_bundle / "model.json").read_text())["rejection"]
    assert stored == rejection and stored["num_images"] == len(layout.samples("val"))
    assert stored["val_accept_rate"] >= 0.95
    predictor = Predictor.load(tiny_bundle)
    assert predictor.rejection == stored and not predictor.notes
    # A malformed threshold is refused rather than silently accepting everything.
    data = json.loads((tiny_bundle / "model.json").read_text())
    data["rejection"]["threshold"] = "high"
    (tiny_bundle / "model.json").write_text(json.dumps(data))
    with pytest.raises(MarineLifeError, match="rejection"):
        Predictor.load(tiny_bundle)
