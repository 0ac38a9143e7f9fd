"""Train/eval transforms: Keras-equivalent augmentation, picklable, distinct per worker."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from marinelife.config import AugmentConfig, DenoiseConfig
from marinelife.data.preprocess import PreprocessConfig, preprocess_image, to_normalised_tensor
from marinelife.data.transforms import (
    EvalTransform,
    TrainTransform,
    build_augmentation,
    build_eval_transform,
    build_train_transform,
)
from marinelife.errors import MarineLifeError

NO_AUG = dict(
    rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, hflip=False, vflip=False,
    brightness=(1.0, 1.0), channel_shift=0.0,
)  # fmt: skip


def _config(size: int = 32, denoise: str = "none") -> PreprocessConfig:
    denoise_config = DenoiseConfig(denoise)
    return PreprocessConfig(size, (0.5,) * 3, (0.25,) * 3, "bilinear", 0.875, denoise_config)


def _photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


class _Images(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.image = _photo()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def test_train_output_shape_and_randomness() -> None:
    transform = build_train_transform(AugmentConfig(), _config(32, denoise="median"))
    a, b = transform(_photo()), transform(_photo())
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)


def test_seed_makes_augmentation_reproducible() -> None:
    one = build_train_transform(AugmentConfig(), _config(), seed=3)
    two = build_train_transform(AugmentConfig(), _config(), seed=3)
    assert torch.equal(one(_photo()), two(_photo()))


def test_explicit_seed_wins_over_worker_reseed() -> None:
    transform = build_train_transform(AugmentConfig(), _config())
    transform.set_random_seed(7)
    first = transform(_photo())
    transform.set_random_seed(7)
    assert torch.equal(first, transform(_photo()))


def test_disabled_augmentation_is_the_eval_transform() -> None:
    transform = build_train_transform(AugmentConfig(enabled=False), _config())
    assert isinstance(transform, EvalTransform)


def test_eval_transform_equals_preprocess_image() -> None:
    config = _config(32, denoise="bilateral")
    image = _photo(1)
    assert torch.allclose(build_eval_transform(config)(image), preprocess_image(image, config))


def test_without_augmentation_train_is_whole_image_resize() -> None:
    config = _config(32)
    image = _photo()
    out = TrainTransform(AugmentConfig(**NO_AUG), config)(image)
    squashed = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    # The identity warp may still resample by a hair.
    expected = to_normalised_tensor(squashed, config.mean, config.std)
    assert (out - expected).abs().mean() < 0.02


def test_brightness_is_multiplicative() -> None:
    augment = build_augmentation(AugmentConfig(**(NO_AUG | {"brightness": (0.5, 0.5)})))
    image = np.full((16, 16, 3), 200, np.uint8)
    assert np.allclose(augment(image=image)["image"], 100, atol=1)


def test_channel_shift_is_per_channel_fraction_of_255() -> None:
    augment = build_augmentation(AugmentConfig(**(NO_AUG | {"channel_shift": 0.1})))
    image = np.full((8, 8, 3), 128, np.uint8)
    shifts = np.array([augment(image=image)["image"][0, 0].astype(int) - 128 for _ in range(50)])
    assert np.abs(shifts).max() <= 26
    assert (shifts[:, 0] != shifts[:, 1]).any()  # channels move independently


@pytest.mark.parametrize("fill", ["reflect", "nearest", "constant"])
def test_fill_modes(fill: str) -> None:
    augment = build_augmentation(AugmentConfig(**(NO_AUG | {"shift": 0.4}), fill=fill))
    augment.set_random_seed(0)
    image = np.full((16, 16, 3), 200, np.uint8)
    minima = [augment(image=image)["image"].min() for _ in range(20)]
    # Only constant fill brings in black borders; reflect/nearest repeat the image's own pixels.
    if fill == "constant":
        assert min(minima) == 0
    else:
        assert min(minima) == 200


def test_bad_augment_values_are_user_errors() -> None:
    with pytest.raises(MarineLifeError):
        build_augmentation(AugmentConfig(fill="wrap"))
    with pytest.raises(MarineLifeError):
        build_augmentation(AugmentConfig(zoom=1.5))
    with pytest.raises(MarineLifeError):
        build_augmentation(AugmentConfig(brightness=(1.2, 0.8)))


def test_transforms_pickle() -> None:
    for transform in (
        build_train_transform(AugmentConfig(), _config(denoise="nlm")),
        build_eval_transform(_config()),
    ):
        clone = pickle.loads(pickle.dumps(transform))
        assert clone(_photo()).shape == (3, 32, 32)


def test_dataloader_workers_draw_different_augmentations() -> None:
    torch.manual_seed(0)
    dataset = _Images(build_train_transform(AugmentConfig(), _config()))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    batches = [b[0] for b in loader]
    # Worker 0 produces items 0,2,4,6 and worker 1 items 1,3,5,7; unseeded forks would pair up.
    assert not torch.equal(batches[0], batches[1])
    assert len({tuple(b.flatten()[:64].tolist()) for b in batches}) == len(batches)
