"""Fuzzing the image path: random and mutated JPEG/PNG/GIF/WebP/TIFF/BMP bytes through the one
decode + preprocess function predict and serve use, and through the training dataset + train
transform. Every case ends in a finite float32 tensor of the right shape or the project's own
error; nothing else, and never a hang (each case runs under an alarm).

``bench/fuzz_images.py`` runs the same idea for thousands of cases and prints outcome counts.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marinelife.config import AugmentConfig
from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.data.scan import Sample
from marinelife.data.synthetic import IMAGE_FORMATS as FORMATS
from marinelife.data.synthetic import IMAGE_MODES as MODES
from marinelife.data.synthetic import encode_image as encode
from marinelife.data.synthetic import mutate_bytes as mutate
from marinelife.data.transforms import build_train_transform
from marinelife.errors import MarineLifeError

# Pillow warns about the damage it tolerates ("Corrupt EXIF data"); the outcome is what counts.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIZE = 32
CONFIG = PreprocessConfig(
    input_size=SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875
)
CASE_SECONDS = 20  # a hang, not slowness: decoding 64-px images takes milliseconds
FUZZ = settings(
    max_examples=250,
    deadline=None,  # the alarm below bounds each case; wall time on a loaded CI box varies
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    """SIGALRM for Python-level loops; faulthandler as the backstop for a hang inside C code."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds * 3, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "overwrite", "insert", "truncate", "delete", "duplicate"]),
        st.floats(0, 1, allow_nan=False),
        st.binary(min_size=1, max_size=16),
    ),
    max_size=6,
)


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "valid", "random", "splice"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    fmt = draw(st.sampled_from(FORMATS))
    data = encode(
        fmt,
        draw(st.sampled_from(MODES)),
        draw(st.integers(1, 48)),
        draw(st.integers(1, 48)),
        draw(st.integers(0, 2**16)),
        frames=draw(st.sampled_from([1, 1, 1, 3])),
    )
    if kind == "valid":
        return data
    if kind == "splice":  # a real header over random content
        cut = draw(st.integers(0, min(64, len(data))))
        return data[:cut] + draw(st.binary(max_size=1024))
    return mutate(data, draw(OPS))


def _check_tensor(tensor: torch.Tensor) -> None:
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.float32
    assert tuple(tensor.shape) == (3, SIZE, SIZE)
    assert torch.isfinite(tensor).all()


@FUZZ
@given(data=image_bytes())
def test_decode_and_preprocess_gives_a_tensor_or_our_error(data):
    with time_limit(CASE_SECONDS):
        try:
            tensor = load_and_preprocess(data, CONFIG)
        except MarineLifeError:
            return
    _check_tensor(tensor)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


TRAIN_TRANSFORM = build_train_transform(AugmentConfig(), CONFIG, seed=0)


@settings(FUZZ, max_examples=120)
@given(data=image_bytes(), suffix=st.sampled_from([".jpg", ".png", ".gif", ".webp", ".tif"]))
def test_training_dataset_gives_a_tensor_or_our_error(case_dir, data, suffix):
    path = case_dir / f"case{suffix}"
    path.write_bytes(data)
    dataset = ImageSampleDataset(
        [Sample(path, "crab")], {"crab": 0}, TRAIN_TRANSFORM, draft_size=CONFIG.draft_size
    )
    with time_limit(CASE_SECONDS):
        try:
            tensor, target = dataset[(0, 7)]  # (index, epoch seed), as the sampler yields
        except MarineLifeError:
            return
    _check_tensor(tensor)
    assert target == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_seed_format_decodes_when_intact(fmt):
    """The fuzz corpus starts from images the path accepts (else mutations prove little)."""
    for mode in MODES:
        _check_tensor(load_and_preprocess(encode(fmt, mode, 40, 24, seed=1), CONFIG))
