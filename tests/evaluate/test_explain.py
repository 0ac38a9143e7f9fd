"""Grad-CAM: a map of the input's size that peaks on the object a toy model learned to find."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")

from marinelife.evaluate.explain import GradCam, last_spatial_layer  # noqa: E402


def _images(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise; half of the images hold a bright 8x8 square somewhere (class 1)."""
    x = rng.normal(0, 0.3, (n, 3, 32, 32)).astype(np.float32)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        top, left = rng.integers(0, 25, 2)
        x[i, :, top : top + 8, left : left + 8] += 2.0
    return torch.from_numpy(x), torch.from_numpy(y)


def _toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, y = _images(32, rng)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = _images(64, np.random.default_rng(1))
    assert (model(x).argmax(1) == y).float().mean() > 0.9, "toy model failed to learn"
    return model.eval()


def test_gradcam_peaks_on_the_planted_object():
    model = _toy_model()
    assert isinstance(last_spatial_layer(model, 32), torch.nn.ReLU)  # not the 1x1 pooled output
    image = torch.from_numpy(np.random.default_rng(2).normal(0, 0.3, (1, 3, 32, 32)).astype("f"))
    image[:, :, 20:28, 4:12] += 2.0
    maps, probs = GradCam(model, 32)(image, [1])
    assert maps.shape == (1, 32, 32)
    assert probs.shape == (1, 2) and probs[0].argmax() == 1
    peak_y, peak_x = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert 18 <= peak_y < 30 and 2 <= peak_x < 14
    inside = maps[0, 20:28, 4:12].mean()
    outside = np.delete(maps[0].ravel(), np.ravel_multi_index(
        np.mgrid[20:28, 4:12].reshape(2, -1), (32, 32))).mean()  # fmt: skip
    assert inside > 3 * outside
