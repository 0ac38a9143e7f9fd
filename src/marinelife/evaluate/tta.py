"""Test-time augmentation: several views of each photo, their logits averaged, then softmax.

``flip`` adds the mirror image; ``five-crop`` takes the four corners and the centre of the resized
photo, so objects near the edges are seen too. Every view comes from the one preprocessing
function (:func:`~marinelife.data.preprocess.preprocess_views`). The views are merged by
:func:`~marinelife.models.forward.merge_views` — the same rule ``predict --tta flip`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import softmax
from torch.utils.data import DataLoader

from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig, five_crops, preprocess_views
from marinelife.data.scan import Sample
from marinelife.errors import MarineLifeError
from marinelife.logutil import progress
from marinelife.models.forward import merge_views

__all__ = ["TTAViews", "check_tta_mode", "five_crops", "predict_samples_tta"]
TTA_MODES = ("none", "flip", "five-crop")


def check_tta_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise MarineLifeError(f"--tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


class TTAViews:
    """Array → ``[views, 3, S, S]`` tensor; a plain class so it pickles into DataLoader workers."""

    def __init__(self, config: PreprocessConfig, mode: str):
        self.config = config
        self.mode = check_tta_mode(mode)

    @property
    def num_views(self) -> int:
        return {"none": 1, "flip": 2, "five-crop": 5}[self.mode]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.mode == "five-crop":
            return preprocess_views(image, self.config, crops="five")
        plain = preprocess_views(image, self.config)
        return torch.cat([plain, plain.flip(-1)]) if self.mode == "flip" else plain


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
    """``(targets [N], probabilities [N, K])``: the softmax of each image's merged views."""
    views = TTAViews(preprocess, mode)
    dataset = ImageSampleDataset(samples, class_to_index, views, draft_size=preprocess.draft_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model.eval()
    all_targets, all_probs = [], []
    for inputs, targets in progress(loader, total=len(loader), desc=f"test tta={mode}"):
        batch, count = inputs.shape[:2]
        logits = model(inputs.flatten(0, 1).to(device)).float().cpu().numpy()
        merged = merge_views(logits.reshape(batch, count, -1))
        all_probs.append(torch.from_numpy(softmax(merged, axis=1)))
        all_targets.append(targets.cpu())
    return torch.cat(all_targets).numpy(), torch.cat(all_probs).numpy()
