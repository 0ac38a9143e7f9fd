"""Test-time augmentation: view shapes, five-crop geometry, flip TTA of a flip-invariant model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marinelife.data.preprocess import PreprocessConfig, preprocess_image
from marinelife.data.scan import scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate.evaluate_split import predict_samples
from marinelife.evaluate.tta import TTAViews, check_tta_mode, five_crops, predict_samples_tta

CONFIG = PreprocessConfig(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _invariant_model(classes: int) -> torch.nn.Module:
    # Global average pooling first: a mirrored image has the same channel means.
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, classes)
    ).eval()


def test_views_have_the_right_shapes():
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert TTAViews(CONFIG, "none")(image).shape == (1, 3, 32, 32)
    flip = TTAViews(CONFIG, "flip")(image)
    assert flip.shape == (2, 3, 32, 32)
    assert torch.equal(flip[0], preprocess_image(image, CONFIG))
    assert torch.equal(flip[1], flip[0].flip(-1))
    crops = TTAViews(CONFIG, "five-crop")(image)
    assert crops.shape == (5, 3, 32, 32)
    # The fifth view is the centre crop: exactly the plain eval input.
    assert torch.equal(crops[4], preprocess_image(image, CONFIG))


def test_five_crops_take_the_corners_and_centre():
    array = np.arange(6 * 8).reshape(6, 8)
    tl, tr, bl, br, centre = five_crops(array, 4)
    assert tl[0, 0] == array[0, 0] and tr[0, -1] == array[0, -1]
    assert bl[-1, 0] == array[-1, 0] and br[-1, -1] == array[-1, -1]
    assert np.array_equal(centre, array[1:5, 2:6])


def test_unknown_mode_is_a_user_error():
    with pytest.raises(MarineLifeError, match="--tta"):
        check_tta_mode("rotate")


@pytest.mark.parametrize("mode", ["flip", "five-crop"])
def test_tta_probabilities_shape(tiny_dataset, mode):
    layout = scan_dataset(tiny_dataset)
    samples = layout.samples("test")
    targets, probs = predict_samples_tta(
        _invariant_model(4), samples, layout.class_to_index, CONFIG, mode=mode,
        device=torch.device("cpu"), batch_size=5,
    )  # fmt: skip
    assert targets.shape == (len(samples),)
    assert probs.shape == (len(samples), len(layout.classes))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_flip_tta_of_a_flip_invariant_model_equals_the_plain_result(tiny_dataset):
    layout = scan_dataset(tiny_dataset)
    samples = layout.samples("test")
    model = _invariant_model(len(layout.classes))
    cpu = torch.device("cpu")
    targets, plain = predict_samples(model, samples, layout.class_to_index, CONFIG, device=cpu)
    tta_targets, flipped = predict_samples_tta(
        model, samples, layout.class_to_index, CONFIG, mode="flip", device=cpu
    )
    assert np.array_equal(targets, tta_targets)
    np.testing.assert_allclose(flipped, plain, atol=1e-6)
    assert np.array_equal(flipped.argmax(1), plain.argmax(1))
