"""Edge images are handled the same way by training, predict and serve.

For each one: the eval tensor from ``load_and_preprocess`` (predict/serve) equals what the training
dataset's eval transform gives, from a path and from uploaded bytes; the train transform gives a
finite tensor of the right shape; and, where the predictor and server exist, they agree with it.
"""

from __future__ import annotations

import io
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from marinelife.config import AugmentConfig
from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.image_io import load_image
from marinelife.data.preprocess import (
    PreprocessConfig,
    center_crop,
    load_and_preprocess,
    preprocess_image,
    resize_shorter_side,
    to_normalised_tensor,
)
from marinelife.data.scan import Sample
from marinelife.data.transforms import build_eval_transform, build_train_transform
from marinelife.errors import MarineLifeError

SIZE = 32
CONFIG = PreprocessConfig(
    input_size=SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875
)
GREY = (128, 128, 128)  # what transparent pixels become (image_io._TRANSPARENT_FILL)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: orientation and frame choice show in the pixels."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, : width // 2] = (220, 20, 20)
    arr[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(arr)


def make_edge_images(folder: Path) -> dict[str, tuple[Path, object]]:
    """name → (file, expectation on the decoded RGB image)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, object]] = {}
    cases["1x1"] = (_save(Image.new("RGB", (1, 1), (200, 10, 10)), folder / "one.png"),
                    ("colour", (200, 10, 10)))  # fmt: skip
    cases["10000x10 strip"] = (
        _save(_halves(10000, 10), folder / "strip.png"),
        ("size", (10000, 10)),
    )
    cases["10x10000 strip"] = (
        _save(_halves(10, 10000), folder / "tall.jpg"),
        ("size", (10, 10000)),
    )
    sixteen = Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16))
    cases["16-bit PNG"] = (_save(sixteen, folder / "sixteen.png"), ("colour", (255, 255, 255)))
    gradient = np.linspace(0, 65535, 40 * 30).astype(np.uint16).reshape(30, 40)
    cases["16-bit PNG gradient"] = (_save(Image.fromarray(gradient), folder / "grad16.png"),
                                    ("size", (40, 30)))  # fmt: skip
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    cases["CMYK JPEG"] = (_save(cmyk, folder / "cmyk.jpg", quality=95), ("near", (255, 0, 0)))
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    cases["palette PNG, transparent"] = (
        _save(palette, folder / "palette.png", transparency=1),
        ("colour", GREY),
    )
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    cases["RGBA PNG, transparent"] = (_save(rgba, folder / "rgba.png"), ("colour", GREY))
    first, second = Image.new("RGB", (40, 30), (0, 0, 255)), Image.new("RGB", (40, 30), (255, 0, 0))
    cases["animated GIF"] = (
        _save(first, folder / "anim.gif", save_all=True, append_images=[second], duration=100),
        ("near", (0, 0, 255)),
    )
    cases["animated WebP"] = (
        _save(first, folder / "anim.webp", save_all=True, append_images=[second], lossless=True),
        ("near", (0, 0, 255)),
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    cases["EXIF-rotated JPEG"] = (
        _save(_halves(40, 20), folder / "rotated.jpg", exif=exif, quality=95),
        ("rotated", None),
    )
    cases["grayscale JPEG"] = (_save(Image.new("L", (40, 30), 90), folder / "grey.jpg"),
                               ("near", (90, 90, 90)))  # fmt: skip
    cases["1-bit PNG"] = (_save(Image.new("1", (40, 30), 1), folder / "bw.png"),
                          ("colour", (255, 255, 255)))  # fmt: skip
    cases["LA PNG"] = (_save(Image.new("LA", (40, 30), (50, 255)), folder / "la.png"),
                       ("colour", (50, 50, 50)))  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    return make_edge_images(tmp_path_factory.mktemp("edge"))


CASES = [
    "1x1", "10000x10 strip", "10x10000 strip", "16-bit PNG", "16-bit PNG gradient", "CMYK JPEG",
    "palette PNG, transparent", "RGBA PNG, transparent", "animated GIF", "animated WebP",
    "EXIF-rotated JPEG", "grayscale JPEG", "1-bit PNG", "LA PNG",
]  # fmt: skip


def _check_decoded(img: Image.Image, expectation) -> None:
    kind, value = expectation
    arr = np.asarray(img).astype(int)
    assert img.mode == "RGB"
    if kind == "colour":
        assert (arr == np.array(value)).all(), arr[0, 0]
    elif kind == "near":
        assert np.abs(arr.mean(axis=(0, 1)) - np.array(value)).max() < 12, arr.mean(axis=(0, 1))
    elif kind == "size":
        assert img.size == value
    elif kind == "rotated":
        # Stored 40x20 with red left / blue right; displayed rotated 90° clockwise: 20x40,
        # red on top, blue at the bottom.
        assert img.size == (20, 40)
        top, bottom = arr[:15].mean(axis=(0, 1)), arr[-15:].mean(axis=(0, 1))
        assert top[0] > 150 and top[2] < 80 and bottom[2] > 150 and bottom[0] < 80


@pytest.mark.parametrize("case", CASES)
def test_decoded_as_expected(edge, case):
    path, expectation = edge[case]
    _check_decoded(load_image(path), expectation)


@pytest.mark.parametrize("case", CASES)
def test_train_eval_predict_paths_agree(edge, case):
    path, _ = edge[case]
    served = load_and_preprocess(path, CONFIG)  # predict and serve
    assert served.dtype == torch.float32 and served.shape == (3, SIZE, SIZE)
    assert torch.isfinite(served).all()
    uploaded = load_and_preprocess(path.read_bytes(), CONFIG, name=path.name)  # serve: bytes
    assert torch.equal(served, uploaded)
    sample = [Sample(path, "crab")]
    evaluated = ImageSampleDataset(
        sample, {"crab": 0}, build_eval_transform(CONFIG), draft_size=CONFIG.draft_size
    )[0][0]  # training's validation/test path
    assert torch.equal(served, evaluated)
    train_ds = ImageSampleDataset(
        sample,
        {"crab": 0},
        build_train_transform(AugmentConfig(), CONFIG, seed=0),
        draft_size=CONFIG.draft_size,
    )
    for epoch_seed in (1, 2):
        trained, target = train_ds[(0, epoch_seed)]
        assert trained.dtype == torch.float32 and trained.shape == (3, SIZE, SIZE)
        assert torch.isfinite(trained).all() and target == 0


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    predictor_mod = pytest.importorskip("marinelife.infer.predictor")
    from marinelife.config import TrainConfig
    from marinelife.fileio import save_weights
    from marinelife.models import build_classifier
    from marinelife.models.bundle import ModelInfo, head_settings, write_model_json

    torch.manual_seed(0)
    config = TrainConfig(architecture="test_efficientnet", pretrained=False)
    model = build_classifier(config, 3)
    folder = tmp_path_factory.mktemp("edge-bundle")
    save_weights(model.state_dict(), folder / "best.safetensors")
    info = ModelInfo(
        architecture=config.architecture,
        classes=["crab", "eel", "ray"],
        preprocess=CONFIG,
        head=head_settings(config),
    )
    write_model_json(info, folder)
    return predictor_mod.Predictor.load(folder, backend="torch", reject=False)


def test_predictor_agrees_with_training_eval(edge, predictor):
    paths = [edge[case][0] for case in CASES]
    for path in paths:
        assert np.array_equal(predictor.preprocess(path), load_and_preprocess(path, CONFIG).numpy())
    results = dict(predictor.predict_files(paths, top_k=3, batch_size=4))
    batch = np.stack([load_and_preprocess(p, CONFIG).numpy() for p in paths])
    expected = predictor.predict_batch(batch, top_k=3, paths=[str(p) for p in paths])
    for path, want in zip(paths, expected):
        got = results[path]
        assert not isinstance(got, Exception), (path, got)
        _assert_same_probabilities(dict(got.top_k), dict(want.top_k))


def _assert_same_probabilities(got: dict[str, float], want: dict[str, float]) -> None:
    # All three classes are in the top 3; an untrained net's near-ties make labels alone flaky.
    assert set(got) == set(want)
    for name in want:
        assert abs(got[name] - want[name]) < 1e-4, (name, got, want)


def test_server_agrees_with_predictor(edge, predictor):
    pytest.importorskip("marinelife.infer.server")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from marinelife.infer.server import create_app

    with TestClient(create_app(predictor)) as client:
        for case in CASES:
            path = edge[case][0]
            response = client.post(
                "/v1/predict", files={"file": (path.name, path.read_bytes(), "image/octet-stream")}
            )
            assert response.status_code == 200, (case, response.text)
            got = response.json()["results"][0]
            want = next(iter(predictor.predict_files([path], top_k=3)))[1]
            served = {entry["label"]: entry["probability"] for entry in got["top_k"]}
            _assert_same_probabilities(served, dict(want.top_k))


# ---------------------------------------------------------------------------------------------
# hostile geometry: a few kilobytes that would resize into gigabytes


@pytest.mark.parametrize("shape", [(2_000_000, 1), (1, 2_000_000)], ids=["wide", "tall"])
def test_extreme_strip_is_bounded_in_memory_and_time(shape):
    """A 6 kB PNG of 2,000,000x1 pixels is under the pixel limit but would resize (shorter
    side → 36) into 36x72,000,000 pixels. It must cost neither gigabytes nor seconds."""
    buffer = io.BytesIO()
    Image.new("RGB", shape, (200, 10, 10)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 64_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    start = time.perf_counter()
    tensor = load_and_preprocess(buffer.getvalue(), CONFIG)
    assert time.perf_counter() - start < 20
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, grown_mb
    expected = to_normalised_tensor(
        np.full((SIZE, SIZE, 3), (200, 10, 10), dtype=np.uint8), CONFIG.mean, CONFIG.std
    )
    assert torch.equal(tensor, expected)


def test_windowed_resize_matches_full_resize_on_a_smooth_strip():
    """The strip path resizes only the centre window; on real content it matches the full
    resize (PIL may order its two passes differently, so allow a level of rounding)."""
    yy, xx = np.mgrid[0:5, 0:150_001]
    arr = np.repeat((np.sin(xx / 40.0 + yy) * 100 + 128)[..., None], 3, axis=2).astype(np.uint8)
    img = Image.fromarray(arr)
    windowed = preprocess_image(img, CONFIG)
    full = resize_shorter_side(img, CONFIG.scale_size, CONFIG.interpolation)
    reference = to_normalised_tensor(center_crop(np.asarray(full), SIZE), CONFIG.mean, CONFIG.std)
    std = torch.tensor(CONFIG.std)[:, None, None]
    levels = ((windowed - reference).abs() * std * 255).max()
    assert levels <= 1.001, levels


def test_pixel_bomb_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 MP in ~12 kB
    with pytest.raises(MarineLifeError, match="pixel limit"):
        load_and_preprocess(buffer.getvalue(), CONFIG)
