"""Train and eval transforms on ``HxWx3`` uint8 RGB arrays → normalised float32 CHW tensors.

Train: resize the whole photo to ``input_size x input_size`` (as Keras ``flow_from_directory``
did, no crop) → enhance → denoise → Keras-equivalent augmentation (Albumentations) → normalise.
Eval: exactly :func:`marinelife.data.preprocess.preprocess_image`.

Why the filters come before augmentation: they correct the photo's own defects (the denoiser its
noise: sensor grain, suspended particles; the enhancement its colour cast and flat contrast), and
at eval/predict time they only ever see un-augmented photos. Filtering after augmentation would
instead smooth the affine warp's interpolation, the reflected borders and the colour shifts (and
white-balance the channel shift away), so the network would learn on a filter response it never
meets in deployment. (The Keras original ran its ``preprocessing_function`` after augmentation.)

The transforms are plain classes, so they pickle into DataLoader workers; each worker reseeds
its Albumentations generator from torch's per-worker seed, otherwise forked workers would all
replay the same "random" augmentations.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np
import torch

from marinelife.config import AugmentConfig
from marinelife.data.filters import apply_filters
from marinelife.data.preprocess import (
    INTERPOLATIONS,
    PreprocessConfig,
    as_rgb_image,
    preprocess_image,
    to_normalised_tensor,
)
from marinelife.errors import MarineLifeError

BORDER_MODES = {
    # Keras/scipy "reflect" repeats the edge pixel (abcd|dcba), which is OpenCV's BORDER_REFLECT.
    "reflect": cv2.BORDER_REFLECT,
    "nearest": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}


def build_augmentation(augment: AugmentConfig) -> A.Compose:
    """The Keras ``ImageDataGenerator`` settings as an Albumentations pipeline (uint8 → uint8).

    Same order as Keras ``apply_transform``: one affine warp (rotation, shift, shear, zoom;
    bilinear, like Keras' ``order=1``), channel shift, flips, brightness.
    """
    if augment.fill not in BORDER_MODES:
        raise MarineLifeError(
            f"config: augment.fill={augment.fill!r} is not one of {', '.join(BORDER_MODES)}"
        )
    if not 0 <= augment.zoom < 1 or not 0 <= augment.shift < 1:
        raise MarineLifeError("config: augment.zoom and augment.shift must be in [0, 1)")
    low, high = augment.brightness
    if not 0 < low <= high:
        raise MarineLifeError("config: augment.brightness must be [low, high] with 0 < low <= high")
    # Keras samples z in [1-zoom, 1+zoom] per axis and maps output to input by z, so the picture
    # is magnified by 1/z: the scale range is [1/(1+zoom), 1/(1-zoom)], x and y independent.
    scale = (1.0 / (1.0 + augment.zoom), 1.0 / (1.0 - augment.zoom))
    shear_deg = math.degrees(augment.shear)  # config holds radians; Albumentations wants degrees
    shift = augment.shift
    steps: list[A.BasicTransform] = [
        A.Affine(
            scale={"x": scale, "y": scale},
            translate_percent={"x": (-shift, shift), "y": (-shift, shift)},
            rotate=(-augment.rotation, augment.rotation),
            shear={"x": (-shear_deg, shear_deg), "y": (0.0, 0.0)},
            interpolation=cv2.INTER_LINEAR,
            border_mode=BORDER_MODES[augment.fill],
            fill=0,
            keep_ratio=False,
            p=1.0,
        )
    ]
    if augment.channel_shift > 0:
        limit = augment.channel_shift * 255.0
        steps.append(
            A.RGBShift(
                r_shift_limit=(-limit, limit),
                g_shift_limit=(-limit, limit),
                b_shift_limit=(-limit, limit),
                p=1.0,
            )
        )
    if augment.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if augment.vflip:
        steps.append(A.VerticalFlip(p=0.5))
    if (low, high) != (1.0, 1.0):
        # Keras brightness_range is PIL ImageEnhance.Brightness: one multiplier for the image.
        steps.append(A.MultiplicativeNoise(multiplier=(low, high), per_channel=False, p=1.0))
    return A.Compose(steps)


class EvalTransform:
    """Array → tensor, identical to :func:`preprocess_image` (it is that function)."""

    def __init__(self, config: PreprocessConfig):
        self.config = config

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return preprocess_image(image, self.config)

    def __repr__(self) -> str:
        return f"EvalTransform({self.config!r})"


class TrainTransform:
    """Array → resize to ``input_size`` square → enhance → denoise → augmentation → tensor."""

    def __init__(self, augment: AugmentConfig, config: PreprocessConfig, seed: int | None = None):
        self.augment = augment
        self.config = config
        self.seed = seed
        self.pipeline = build_augmentation(augment)
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        self._seeded_pid: int | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentation (e.g. per item and epoch, for worker-count-independent runs)."""
        self.pipeline.set_random_seed(seed)
        self._seeded_pid = os.getpid()

    def _reseed_in_worker(self) -> None:
        # Once per process, unless someone seeded explicitly: torch gives each worker (and each
        # epoch's fresh workers) a distinct seed derived from the run's seed.
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        self._seeded_pid = pid
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self.pipeline.set_random_seed(info.seed % 2**32)

    def _prepared(self, image: np.ndarray) -> np.ndarray:
        """Resized and filtered: the same for every view of one photo, so kept for the next.

        Holding the input itself (not its ``id``) means a new photo can never be mistaken for
        the last one; the cached array is read-only, augmentation returns new arrays."""
        if self._last is not None and self._last[0] is image:
            return self._last[1]
        size = self.config.input_size
        rgb = as_rgb_image(image)
        resized = rgb.resize((size, size), INTERPOLATIONS[self.config.interpolation])
        array = np.asarray(resized, dtype=np.uint8)
        array = apply_filters(array, self.config.enhance, self.config.denoise)
        array.flags.writeable = False
        self._last = (image, array)
        return array

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        self._reseed_in_worker()
        array = self.pipeline(image=self._prepared(image))["image"]
        return to_normalised_tensor(array, self.config.mean, self.config.std)

    def __repr__(self) -> str:
        return f"TrainTransform({self.augment!r}, {self.config!r})"


def build_train_transform(
    augment: AugmentConfig, config: PreprocessConfig, *, seed: int | None = None
) -> Callable[[np.ndarray], torch.Tensor]:
    """The training transform; with ``augment.enabled=False`` it is the eval transform."""
    if not augment.enabled:
        return EvalTransform(config)
    return TrainTransform(augment, config, seed=seed)


def build_eval_transform(config: PreprocessConfig) -> Callable[[np.ndarray], torch.Tensor]:
    return EvalTransform(config)
