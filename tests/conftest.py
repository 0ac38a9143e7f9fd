"""Shared fixtures: tiny generated image folders; never the network, never ../shared."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

os.environ.setdefault("MPLBACKEND", "Agg")

import marinelife as ml  # noqa: E402
from marinelife.config import TrainConfig  # noqa: E402
from marinelife.data.preprocess import preprocess_config_for_model  # noqa: E402
from marinelife.data.synthetic import make_synthetic_dataset  # noqa: E402
from marinelife.fileio import save_weights  # noqa: E402
from marinelife.models import build_classifier  # noqa: E402
from marinelife.models.bundle import ModelInfo, head_settings, write_model_json  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """4 classes, 12/4/4 images per class at 32 px, split layout."""
    return make_synthetic_dataset(
        tmp_path / "data", num_classes=4, counts={"train": 12, "val": 4, "test": 4}, size=32
    )


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(
        tmp_path / "flat", num_classes=3, counts={"all": 20}, size=32, flat=True
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path → SHA-256 for every file under root (to prove user data never changes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_training_run(**engine_kwargs) -> tuple[list[float], torch.nn.Module, DataLoader]:
    """Five epochs of ``train_one_epoch`` on a separable 3-class toy problem (an MLP on 8
    numbers): the per-epoch losses, the model and its loader. ``engine_kwargs`` pick the path
    under test (``amp="bf16"``, ``scaler=...``)."""
    from marinelife.fit.epoch import train_one_epoch
    from marinelife.fit.schedule import build_scheduler

    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    x[y == 1] += 2.0
    loader = DataLoader(list(zip(x, y)), batch_size=16)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, epochs=5, steps_per_epoch=4, warmup_epochs=0, min_ratio=0.1)
    losses = [
        train_one_epoch(
            model, loader, opt, sched, torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
            epoch_label=f"e{epoch}", global_step=0, show_progress=False, **engine_kwargs,
        )["loss"]
        for epoch in range(5)
    ]  # fmt: skip
    return losses, model, loader


@pytest.fixture
def warnings_seen():
    """Warnings from the marinelife logger (it does not propagate to the root logger)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("marinelife")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def run_check(data, *, as_json: bool = False, min_size: int = 32) -> int:
    """`marinelife check` through the public API: prints the report, 0 when clean, else 1."""
    report = ml.check(data, min_size=min_size)
    print(report.to_json() if as_json else report)
    return 0 if report.ok else 1
