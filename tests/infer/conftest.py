"""Tiny model bundles for the infer tests: random-init MobileNetV2-0.5 at 32 px, built in seconds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from marinelife.config import TrainConfig
from marinelife.data.preprocess import preprocess_config_for_model
from marinelife.infer.bundle import ModelInfo, head_settings, write_model_json
from marinelife.models import build_classifier
from marinelife.train.checkpoint import save_weights

# The sorted class folders of conftest.py's tiny_dataset (4 synthetic shapes).
CLASSES = ["synthetic disc", "synthetic square", "synthetic star", "synthetic triangle"]


def make_bundle(folder: Path, classes: list[str] = CLASSES, seed: int = 0) -> Path:
    """Write best.safetensors + model.json for an untrained 32-px model with ``classes``."""
    torch.manual_seed(seed)
    config = TrainConfig(architecture="mobilenetv2_050", pretrained=False)
    model = build_classifier(config, len(classes)).eval()
    # Random BatchNorm statistics make outputs depend on the input (fresh ones are identity).
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), folder / "best.safetensors")
    info = ModelInfo(
        architecture=config.architecture,
        classes=list(classes),
        preprocess=preprocess_config_for_model(model.backbone, input_size=32),
        head=head_settings(config),
        metrics={"val_acc": 0.5},
    )
    write_model_json(info, folder)
    return folder


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "run")


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (48, 40), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()
