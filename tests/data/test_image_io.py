"""load_image: every mode and container becomes RGB; every bad input becomes ImageDecodeError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from marinelife.data.image_io import (
    ImageDecodeError,
    is_image_path,
    load_image,
    load_image_array,
)
from marinelife.errors import MarineLifeError

GREY = (128, 128, 128)  # the documented fill for transparent pixels


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def noise(h: int = 32, w: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` with a valid CRC and no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------
# modes and containers


def test_rgb_jpeg_from_path_and_bytes(tmp_path: Path) -> None:
    data = encode(noise(24, 40), "JPEG")
    path = write(tmp_path, "fish.jpg", data)
    from_path = assert_rgb(load_image(path), (40, 24))
    from_str = assert_rgb(load_image(str(path)), (40, 24))
    from_bytes = assert_rgb(load_image(data), (40, 24))
    assert np.array_equal(from_path, from_bytes)
    assert np.array_equal(from_path, from_str)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    arr = assert_rgb(load_image(encode(cmyk, "JPEG", quality=95)), (32, 32))
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gradient_fills_the_8_bit_range(fmt: str) -> None:
    ramp = np.linspace(0, 65535, 64).astype(np.uint16)[None, :].repeat(8, axis=0)
    img = Image.fromarray(ramp)
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    arr = assert_rgb(load_image(data), (64, 8))
    row = arr[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0), "a 16-bit ramp must stay monotonic (no wrap-around)"
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    # Every level scales by 255/65535: no clipping to white, no low-byte garbage.
    assert np.allclose(row, ramp[0] / 65535 * 255, atol=1)


def test_16_bit_dark_values_scale_by_full_range() -> None:
    dark = Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16))
    arr = np.asarray(load_image(encode(dark, "PNG")))
    assert arr.max() == round(1000 / 65535 * 255)


def test_palette_png_with_transparency() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0])  # index 0 red (transparent), 1 green
    pal.paste(1, (4, 0, 8, 8))
    data = encode(pal, "PNG", transparency=0)
    arr = assert_rgb(load_image(data), (8, 8))
    assert tuple(arr[0, 0]) == GREY
    assert tuple(arr[0, 7]) == (0, 255, 0)


def test_palette_png_without_transparency() -> None:
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255])
    arr = assert_rgb(load_image(encode(pal, "PNG")), (8, 8))
    assert tuple(arr[0, 0]) == (0, 0, 255)


def test_rgba_composited_on_grey() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (4, 0, 8, 8))
    arr = assert_rgb(load_image(encode(rgba, "PNG")), (8, 8))
    assert tuple(arr[0, 0]) == GREY
    assert tuple(arr[0, 7]) == (0, 0, 255)


def test_la_composited_on_grey() -> None:
    la = Image.new("LA", (8, 8), (200, 0))
    la.paste((50, 255), (4, 0, 8, 8))
    arr = assert_rgb(load_image(encode(la, "PNG")), (8, 8))
    assert tuple(arr[0, 0]) == GREY
    assert tuple(arr[0, 7]) == (50, 50, 50)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"])
def test_grayscale(fmt: str) -> None:
    ramp = np.linspace(0, 255, 32).astype(np.uint8)[None, :].repeat(16, axis=0)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    arr = assert_rgb(load_image(encode(Image.fromarray(ramp, "L"), fmt, **kwargs)), (32, 16))
    assert np.array_equal(arr[..., 0], arr[..., 2])
    assert arr[0, 0, 0] < 10 and arr[0, -1, 0] > 245


def test_one_bit() -> None:
    bw = Image.new("1", (8, 8), 0)
    bw.paste(1, (4, 0, 8, 8))
    arr = assert_rgb(load_image(encode(bw, "PNG")), (8, 8))
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert tuple(arr[0, 7]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("orientation", "marker_corner"),
    [
        (1, "top-left"),
        (3, "bottom-right"),  # rotated 180°
        (6, "top-right"),  # camera held rotated: display turns it 90° clockwise
        (8, "bottom-left"),  # 90° counter-clockwise
    ],
)
def test_exif_orientation_honoured(tmp_path: Path, orientation: int, marker_corner: str) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 4))  # a 4 px marker survives JPEG compression
    exif = img.getexif()
    exif[0x0112] = orientation
    path = write(tmp_path, "rotated.jpg", encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    before = path.read_bytes()

    out = load_image(path)
    expected_size = (20, 40) if orientation in (6, 8) else (40, 20)
    arr = assert_rgb(out, expected_size).mean(axis=2)
    h, w = arr.shape
    corners = {
        "top-left": arr[:4, :4],
        "top-right": arr[:4, w - 4 :],
        "bottom-left": arr[h - 4 :, :4],
        "bottom-right": arr[h - 4 :, w - 4 :],
    }
    for name, patch in corners.items():
        if name == marker_corner:
            assert patch.mean() > 200, f"marker expected at {name}"
        else:
            assert patch.mean() < 50, f"no marker expected at {name}"
    assert path.read_bytes() == before, "loading must never modify the user's file"


def test_animated_gif_takes_first_frame() -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    arr = assert_rgb(load_image(data), (16, 16))
    assert tuple(arr[8, 8]) == (255, 0, 0)


def test_multi_page_tiff_takes_first_page() -> None:
    first = Image.new("RGB", (8, 8), (0, 255, 0))
    second = Image.new("RGB", (8, 8), (255, 0, 255))
    data = encode(first, "TIFF", save_all=True, append_images=[second])
    assert tuple(np.asarray(load_image(data))[0, 0]) == (0, 255, 0)


def test_mpo_camera_file_takes_first_image() -> None:
    left = Image.new("RGB", (16, 8), (255, 255, 0))
    right = Image.new("RGB", (16, 8), (0, 0, 255))
    data = encode(left, "MPO", save_all=True, append_images=[right], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    r, g, b = np.asarray(load_image(data)).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g > 200 and b < 50


@pytest.mark.parametrize("size", [(1, 1), (10000, 10), (10, 10000)])
def test_extreme_shapes(size: tuple[int, int]) -> None:
    assert_rgb(load_image(encode(Image.new("RGB", size, (9, 99, 199)), "PNG")), size)


def test_load_image_array() -> None:
    arr = load_image_array(encode(Image.new("LA", (5, 3), (10, 255)), "PNG"))
    assert arr.shape == (3, 5, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous or arr.base is not None


def test_draft_size_downscales_large_jpeg_but_not_below_request() -> None:
    data = encode(noise(256, 256), "JPEG")
    out = load_image(data, draft_size=(64, 64))
    assert out.mode == "RGB"
    assert 64 <= min(out.size) < 256


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("a.JPG", True),
        ("a.Png", True),
        ("a.tiff", True),
        ("a.TIF", True),
        ("a.webp", True),
        ("a.gif", True),
        ("a.bmp", True),
        ("a.jpeg", True),
        ("._a.jpg", False),
        (".hidden.png", False),
        ("a.txt", False),
        ("a.heic", True),
        ("a.HIF", True),
        ("a.avif", True),
        ("a.dng", False),
        ("jpg", False),
    ],
)
def test_is_image_path(name: str, expected: bool) -> None:
    assert is_image_path(Path("folder") / name) is expected


# ---------------------------------------------------------------------------------------------
# failures: always ImageDecodeError naming the file


def assert_decode_error(source, label: str, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        load_image(source, **kwargs)
    err = info.value
    assert isinstance(err, MarineLifeError)
    assert label in str(err), f"message should name {label!r}: {err}"
    assert "\n" not in str(err)
    return err


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    assert_decode_error(missing, str(missing))
    assert_decode_error(str(missing), str(missing))


def test_folder_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.jpg"
    folder.mkdir()
    err = assert_decode_error(folder, str(folder))
    assert "folder" in str(err)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.jpg", b"")
    assert "zero-byte" in str(assert_decode_error(path, str(path)))


def test_truncated_jpeg_fails_instead_of_grey_padding(tmp_path: Path) -> None:
    data = encode(noise(64, 64), "JPEG")
    load_image(data)  # the intact file is fine
    path = write(tmp_path, "half.jpg", data[: len(data) // 2])
    assert_decode_error(path, str(path))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_other_formats(tmp_path: Path, fmt: str) -> None:
    data = encode(noise(64, 64), fmt)
    path = write(tmp_path, f"half.{fmt.lower()}", data[: len(data) // 2])
    assert_decode_error(path, str(path))


def test_random_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = write(tmp_path, "noise.png", data)
    assert "not an image" in str(assert_decode_error(path, str(path)))


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are my dive notes, not a photo\n", encoding="utf-8")
    assert_decode_error(path, str(path))


def test_unicode_file_name_in_message(tmp_path: Path) -> None:
    path = write(tmp_path, "méduse 海月.jpg", b"GIF89a-not-really")
    assert_decode_error(path, str(path))


def test_max_pixels_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (20, 10)), "PNG"))
    err = assert_decode_error(path, str(path), max_pixels=199)
    assert "pixel limit" in str(err)
    assert load_image(path, max_pixels=200).size == (20, 10)


@pytest.mark.parametrize("side", [8_000, 10_000, 100_000])
def test_decompression_bomb_header(tmp_path: Path, side: int) -> None:
    # 64 MP (over our 50 MP default), 100 MP (over Pillow's warning), 10 GP (over Pillow's error).
    path = write(tmp_path, "bomb.png", png_header_only(side, side))
    err = assert_decode_error(path, str(path))
    assert "pixel limit" in str(err)


def test_bytes_input_errors_use_name_or_placeholder() -> None:
    assert_decode_error(b"", "<upload>")
    assert_decode_error(b"", "camera-7.jpg", name="camera-7.jpg")
    assert_decode_error(b"\x00\x01garbage", "<upload>")
    assert_decode_error(bytearray(b"\xff\xd8\xff\xe0truncated"), "photo.jpg", name="photo.jpg")


def test_unsupported_but_valid_format_is_refused() -> None:
    # ICO decodes fine in Pillow but is not an accepted photo format.
    data = encode(Image.new("RGB", (16, 16)), "ICO")
    assert_decode_error(data, "<upload>")


# ---------------------------------------------------------------------------------------------
# fuzzing: mutated real encodings must give RGB or ImageDecodeError, nothing else


def _seed_encodings() -> list[bytes]:
    base = noise(12, 10, seed=3)
    exif = base.getexif()
    exif[0x0112] = 6
    seeds = [
        encode(base, "JPEG"),
        encode(base, "JPEG", exif=exif.tobytes()),
        encode(base, "PNG"),
        encode(base.convert("P"), "GIF"),
        encode(base, "WEBP"),
        encode(base, "TIFF"),
        encode(base, "BMP"),
        encode(Image.new("LA", (6, 5), (3, 90)), "PNG"),
        encode(Image.fromarray(np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000), "PNG"),
    ]
    return seeds


SEEDS = _seed_encodings()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            chunk = draw(st.binary(min_size=1, max_size=4))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.one_of(mutated_images(), st.binary(max_size=64)))
def test_fuzz_only_rgb_or_decode_error(data: bytes) -> None:
    try:
        img = load_image(data, name="fuzz.bin")
    except ImageDecodeError as exc:
        assert "fuzz.bin" in str(exc)
        return
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.width >= 1 and img.height >= 1
    np.asarray(img)  # pixels are really there


# ---------------------------------------------------------------------------------------------
# HEIC/HEIF (iPhone) and AVIF; one oversize rule and message for every size


def _heic_bytes(img: Image.Image, **kwargs) -> bytes:
    pytest.importorskip("pillow_heif")
    from marinelife.data.image_io import heif_available

    assert heif_available()
    return encode(img, "HEIF", **kwargs)


def test_heic_loads_with_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 8, 8))
    exif = img.getexif()
    exif[0x0112] = 6  # iPhone held upright: display turns it 90° clockwise
    path = write(tmp_path, "IMG_0001.HEIC", _heic_bytes(img, exif=exif.tobytes(), quality=95))
    with Image.open(path) as opened:
        assert opened.format == "HEIF"  # the name in ALLOWED_FORMATS
    arr = assert_rgb(load_image(path), (20, 40)).mean(axis=2)
    assert arr[:8, -8:].mean() > 200, "marker must end up top-right, as in the JPEG test"
    assert arr[-8:, :8].mean() < 50
    assert_rgb(load_image(path.read_bytes(), name="upload.heic"), (20, 40))


def test_avif_loads(tmp_path: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    path = write(tmp_path, "reef.avif", encode(noise(24, 16), "AVIF", quality=90))
    with Image.open(path) as opened:
        assert opened.format == "AVIF"
    assert_rgb(load_image(path), (16, 24))


def test_heic_without_pillow_heif_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from marinelife.data import image_io

    path = write(tmp_path, "IMG_0002.heic", _heic_bytes(noise(16, 16)))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)
    monkeypatch.delitem(image_io._HEIF_STATE, "available", raising=False)
    err = assert_decode_error(path, str(path))
    assert "pip install pillow-heif" in str(err)
    assert "HEIC" in str(err)


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_oversize_images_get_one_message_naming_file_and_limit(tmp_path: Path, side: int) -> None:
    # 10000² is over our 50 MP limit; 20000² is also over Pillow's own error limit (~179 MP),
    # which used to leak Pillow's "could be decompression bomb DOS attack" text.
    path = write(tmp_path, "photo.png", png_header_only(side, side))
    expected = (
        f"{path}: {side}x{side} pixels ({side * side / 1e6:.1f} MP) exceeds the pixel limit "
        "of 50 MP — downscale the image to at most 50 MP"
    )
    assert str(assert_decode_error(path, str(path))).startswith(expected)
    err = assert_decode_error(png_header_only(side, side), "up.png", name="up.png")
    assert str(err).startswith(expected.replace(str(path), "up.png"))
    assert "DOS" not in str(err)


def test_images_over_pillows_limit_still_decode_when_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With Pillow's limit at 1,000 pixels, Image.open refuses this 4,800-pixel image itself.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    img = noise(60, 80)
    data = encode(img, "PNG")
    assert np.array_equal(assert_rgb(load_image(data), (80, 60)), np.asarray(img))
    err = assert_decode_error(data, "x.png", name="x.png", max_pixels=4_000)
    assert "80x60 pixels" in str(err) and "pixel limit of 4,000 pixels" in str(err)
