"""Test-time augmentation: average the softmax over several views of each photo.

``flip`` adds the mirror image; ``five-crop`` takes the four corners and the centre of the resized
photo (before the usual centre crop), so objects near the edges are seen too. Every view goes
through the same resize → denoise → normalise steps as :func:`preprocess_image`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.denoise import apply_denoise
from marinelife.data.preprocess import (
    PreprocessConfig,
    as_rgb_image,
    preprocess_image,
    resize_shorter_side,
    to_normalised_tensor,
)
from marinelife.data.scan import Sample
from marinelife.errors import MarineLifeError
from marinelife.logutil import progress

TTA_MODES = ("none", "flip", "five-crop")


def check_tta_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise MarineLifeError(f"--tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


def five_crops(array: np.ndarray, size: int) -> list[np.ndarray]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` crops (torchvision)."""
    height, width = array.shape[:2]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    return [array[y : y + size, x : x + size] for y, x in [*corners, (top, left)]]


class TTAViews:
    """Array → ``[views, 3, S, S]`` tensor; a plain class so it pickles into DataLoader workers."""

    def __init__(self, config: PreprocessConfig, mode: str):
        self.config = config
        self.mode = check_tta_mode(mode)

    @property
    def num_views(self) -> int:
        return {"none": 1, "flip": 2, "five-crop": 5}[self.mode]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        config = self.config
        if self.mode != "five-crop":
            plain = preprocess_image(image, config)
            return torch.stack([plain, plain.flip(-1)]) if self.mode == "flip" else plain[None]
        resized = resize_shorter_side(as_rgb_image(image), config.scale_size, config.interpolation)
        array = apply_denoise(np.asarray(resized, dtype=np.uint8), config.denoise)
        crops = five_crops(array, config.input_size)
        return torch.stack([to_normalised_tensor(c, config.mean, config.std) for c in crops])


@torch.inference_mode()
def predict_samples_tta(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    class_to_index: dict[str, int],
    preprocess: PreprocessConfig,
    *,
    mode: str,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(targets [N], probabilities [N, K])``: the softmax averaged over each image's views."""
    views = TTAViews(preprocess, mode)
    dataset = ImageSampleDataset(samples, class_to_index, views, draft_size=preprocess.draft_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model.eval()
    all_targets, all_probs = [], []
    for inputs, targets in progress(loader, total=len(loader), desc=f"test tta={mode}"):
        batch, count = inputs.shape[:2]
        logits = model(inputs.flatten(0, 1).to(device)).float()
        probs = torch.softmax(logits, dim=1).view(batch, count, -1).mean(dim=1)
        all_probs.append(probs.cpu())
        all_targets.append(targets.cpu())
    return torch.cat(all_targets).numpy(), torch.cat(all_probs).numpy()
