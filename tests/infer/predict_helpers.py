"""Shared by the predict tests: a model whose answers are known, and generated media for it.

The "colour model" labels an image by its strongest channel after normalisation: red →
``Sharks``, green → ``Fish``, blue → ``Octopus`` (names from the shipped taxonomy, so the
Darwin Core export needs no custom map). A flat grey in normalised space scores 1/3 for every
class and is rejected as ``unknown`` when the predictor has a threshold.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from conftest import make_bundle
from marinelife.infer.predictor import Predictor
from marinelife.models.bundle import ModelInfo, read_model_info
from marinelife.models.runtime import TorchBackend

CLASSES = ["Sharks", "Fish", "Octopus"]
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)  # RGB
LABEL = {RED: "Sharks", GREEN: "Fish", BLUE: "Octopus"}
FPS = 10


class ColourModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        return 8.0 * (mean - mean.mean(dim=1, keepdim=True))


class CountingBackend(TorchBackend):
    """Counts the images it was asked to classify (to prove --resume predicts nothing twice)."""

    def __init__(self) -> None:
        super().__init__(ColourModel())
        self.images = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.images += len(batch)
        return super().__call__(batch)


def colour_info(tmp_path: Path, *, threshold: float | None = None) -> ModelInfo:
    info, _ = read_model_info(make_bundle(tmp_path / "colour-bundle"))
    rejection = {"score": "max_softmax", "threshold": threshold} if threshold else {}
    return ModelInfo(**{**info.__dict__, "classes": list(CLASSES), "rejection": rejection})


def colour_predictor(tmp_path: Path, *, threshold: float | None = None) -> Predictor:
    info = colour_info(tmp_path, threshold=threshold)
    return Predictor(CountingBackend(), info, model_id="c0l0urm0de11")


def neutral_grey(info: ModelInfo) -> tuple[int, int, int]:
    """The RGB whose normalised channels are all equal: every class scores 1/3."""
    mean = info.preprocess.mean
    return tuple(int(round(255 * m)) for m in mean)  # type: ignore[return-value]


def photo(path: Path, rgb: tuple[int, int, int], *, exif: Image.Exif | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (48, 40), rgb)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, "JPEG", quality=95, **({"exif": exif} if exif is not None else {}))
    else:
        image.save(path)
    return path


def dive_exif() -> Image.Exif:
    """2024-05-01 10:22:33 +02:00, 33°51'54.72"S 151°12'30"E, 18.5 m deep, an OM TG-7."""

    def dms(d: int, m: int, s_x100: int) -> tuple[IFDRational, ...]:
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(s_x100, 100))

    exif = Image.Exif()
    exif[0x010F] = "OM Digital Solutions"
    exif[0x0110] = "TG-7"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[0x9003] = "2024:05:01 10:22:33"
    sub[0x9011] = "+02:00"
    gps = {1: "S", 2: dms(33, 51, 5472), 3: "E", 4: dms(151, 12, 3000), 5: 1}
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({**gps, 6: IFDRational(185, 10)})
    return exif


DIVE_METADATA = {
    "datetime_original": "2024-05-01T10:22:33+02:00",
    "latitude": -33.8652,
    "longitude": 151.2083333,
    "altitude": -18.5,
    "make": "OM Digital Solutions",
    "model": "TG-7",
}


def clip(path: Path, segments: list[tuple[tuple[int, int, int], float]]) -> Path:
    """A 64x64 video of solid RGB colours, each for its number of seconds, at FPS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    assert writer.isOpened(), path
    for rgb, seconds in segments:
        frame = np.full((64, 64, 3), rgb[::-1], dtype=np.uint8)  # OpenCV writes BGR
        for _ in range(int(round(seconds * FPS))):
            writer.write(frame)
    writer.release()
    return path


# red 0-2 s, green 2-4 s, blue 4-6 s
SEGMENTS = [(RED, 2), (GREEN, 2), (BLUE, 2)]


def expected(t: float) -> str:
    return "Sharks" if t < 2 else "Fish" if t < 4 else "Octopus"
