"""The one image-loading function used by check, training, evaluation, predict and serve.

decode → first frame → EXIF orientation → any mode (grey, RGBA, palette, CMYK, 16-bit) → RGB,
with a decompression-bomb guard. Everything that is not a readable image becomes an
:class:`~marinelife.errors.ImageDecodeError` naming the file, never another exception type.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from marinelife.errors import ImageDecodeError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    | {".heic", ".heif", ".hif", ".avif"}  # iPhone / Android defaults, Sony/Canon ".hif"
)
# Pillow format names matching IMAGE_EXTENSIONS; anything else is refused before decoding.
# (Camera MPO files open through JPEG; naming "MPO" here makes Pillow fail with KeyError.)
# AVIF is Pillow's own plugin (Pillow >= 11.2); HEIF (.heic/.heif/.hif) comes from pillow-heif,
# registered on first use. AVIF before HEIF: pillow-heif also accepts "mif1" files, but cannot
# decode AV1. Formats whose plugin is missing are left out when opening (see open_header).
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "AVIF", "HEIF")
# 50 MP: far above any photo this tool needs, far below what exhausts a laptop's memory.
# The one limit for every loader (check, train, evaluate, predict and serve).
DEFAULT_MAX_PIXELS = 50_000_000
# ISO-BMFF major brands (bytes 8-12 after "ftyp") of HEIF and AVIF files.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS |= {b"mif1", b"msf1"}  # generic HEIF brands (AVIF files name "avif" first)
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_STATE: dict[str, bool] = {}  # {"available": ...} once registration has been tried
# Background for transparent pixels: mid-grey keeps cut-outs neutral for ImageNet statistics.
_TRANSPARENT_FILL = (128, 128, 128)

# A truncated JPEG must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_path(path: Path) -> bool:
    """True for a visible file whose extension (any case) is a supported image type."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def heif_available() -> bool:
    """Register pillow-heif's HEIF opener (once, on first use: importing it costs ~50 ms)."""
    if "available" not in _HEIF_STATE:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _HEIF_STATE["available"] = True
        except Exception:  # noqa: BLE001 - missing or broken: .heic files get a clear error
            _HEIF_STATE["available"] = False
    return _HEIF_STATE["available"]


def openable_formats(formats: tuple[str, ...] = ALLOWED_FORMATS) -> tuple[str, ...]:
    """``formats`` minus those without a plugin here (Pillow raises KeyError for those)."""
    if "HEIF" in formats:
        heif_available()
    if any(f not in Image.OPEN for f in formats):
        Image.init()
    return tuple(f for f in formats if f in Image.OPEN)


def open_header(stream, formats: tuple[str, ...] = ALLOWED_FORMATS) -> Image.Image:
    """``Image.open`` (header only, no pixels decoded) without Pillow's own pixel limit.

    Pillow raises ``DecompressionBombError`` inside ``Image.open`` for more than
    2 x ``Image.MAX_IMAGE_PIXELS`` (~179 MP), before the caller can see the size, so huge images
    would get Pillow's text instead of ours. Changing ``Image.MAX_IMAGE_PIXELS`` would affect
    every thread and every other user of Pillow in the process, so instead, on that error, this
    repeats ``Image.open``'s format probe with the same plugins, minus the check. The caller MUST
    compare the size against its limit (:func:`check_pixels`) before ``load()``.
    """
    formats = openable_formats(formats)
    try:
        return Image.open(stream, formats=formats)
    except Image.DecompressionBombError:
        stream.seek(0)
        prefix = stream.read(16)
        for fmt in formats:
            factory, accept = Image.OPEN[fmt]
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):
                continue
            stream.seek(0)
            try:
                return factory(stream, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
        raise


def check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    """The one oversize rule and message, for every loader and the server."""
    width, height = size
    if width * height <= max_pixels:
        return
    limit = f"{max_pixels / 1e6:g} MP" if max_pixels >= 100_000 else f"{max_pixels:,} pixels"
    raise ImageDecodeError(
        f"{width}x{height} pixels ({width * height / 1e6:.1f} MP) exceeds the pixel limit of "
        f"{limit}",
        path=label,
        fix=f"downscale the image to at most {limit} (photos need far fewer pixels)",
    )


def _missing_plugin(prefix: bytes, label: str) -> ImageDecodeError | None:
    """The error for a HEIF/AVIF file this Python cannot open, naming what to install."""
    if prefix[4:8] != b"ftyp":
        return None
    brand = prefix[8:12]
    if brand in _HEIF_BRANDS and not heif_available():
        return ImageDecodeError(
            "is a HEIC/HEIF image, but pillow-heif (which reads them) is not installed",
            path=label,
            fix="`pip install pillow-heif`, or convert the photo to JPEG",
        )
    if brand in _AVIF_BRANDS and "AVIF" not in openable_formats(("AVIF",)):
        return ImageDecodeError(
            "is an AVIF image, but this Pillow cannot read AVIF",
            path=label,
            fix="`pip install -U pillow` (11.2 or newer), or convert the photo to JPEG",
        )
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(np.rint(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _TRANSPARENT_FILL)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow converts these correctly.
    return img.convert("RGB")


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` (a path or raw bytes) into an RGB ``PIL.Image``.

    ``draft_size`` lets JPEG decoding skip detail (DCT scaling) when the photo is much larger than
    the model input; the result is at least that large. ``name`` labels bytes in error messages.
    """
    label = name or (str(source) if not isinstance(source, bytes | bytearray) else "<upload>")
    fix = "remove or replace the file (it is not a readable image)"
    try:
        if isinstance(source, bytes | bytearray):
            if not source:
                raise ImageDecodeError("empty data (0 bytes)", path=label, fix=fix)
            stream = io.BytesIO(source)
        else:
            path = Path(source)
            if path.is_dir():
                raise ImageDecodeError("is a folder, not an image file", path=label, fix=fix)
            if not path.is_file():
                raise ImageDecodeError("no such file", path=label, fix="check the path")
            if path.stat().st_size == 0:
                raise ImageDecodeError("zero-byte file", path=label, fix=fix)
            stream = path.open("rb")
        with stream, warnings.catch_warnings():
            # max_pixels below is the limit; Pillow's own warning would override a larger one.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = open_header(stream)
            except UnidentifiedImageError:
                stream.seek(0)
                missing = _missing_plugin(stream.read(16), label)
                if missing is not None:
                    raise missing from None
                raise
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageDecodeError("image has no pixels", path=label, fix=fix)
            check_pixels((width, height), max_pixels, label)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", draft_size)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = to_rgb(img)
            rgb.load()
            return rgb
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image (unknown format)", path=label, fix=fix) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            f"exceeds the pixel limit (possible decompression bomb: {exc})",
            path=label,
            fix="downscale the image",
        ) from exc
    except MemoryError as exc:
        raise ImageDecodeError("image too large to decode", path=label, fix=fix) from exc
    except Exception as exc:  # noqa: BLE001 - every decoder failure is a bad file, not a bug here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageDecodeError(f"cannot decode image ({reason})", path=label, fix=fix) from exc


def load_image_array(source: str | Path | bytes, **kwargs) -> np.ndarray:
    """:func:`load_image` as an ``HxWx3`` uint8 array (what Albumentations and OpenCV take)."""
    return np.asarray(load_image(source, **kwargs), dtype=np.uint8)
