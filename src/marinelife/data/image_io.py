"""The one image-loading function used by check, training, evaluation, predict and serve.

decode → first frame → EXIF orientation → any mode (grey, RGBA, palette, CMYK, 16-bit) → RGB,
with a decompression-bomb guard. Everything that is not a readable image becomes an
:class:`~marinelife.errors.ImageDecodeError` naming the file, never another exception type.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from marinelife.errors import ImageDecodeError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pillow format names matching IMAGE_EXTENSIONS; anything else is refused before decoding.
# (Camera MPO files open through JPEG; naming "MPO" here makes Pillow fail with KeyError.)
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# 50 MP: far above any photo this tool needs, far below what exhausts a laptop's memory.
DEFAULT_MAX_PIXELS = 50_000_000
# Background for transparent pixels: mid-grey keeps cut-outs neutral for ImageNet statistics.
_TRANSPARENT_FILL = (128, 128, 128)

# A truncated JPEG must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_path(path: Path) -> bool:
    """True for a visible file whose extension (any case) is a supported image type."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


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
            img = Image.open(stream, formats=ALLOWED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageDecodeError("image has no pixels", path=label, fix=fix)
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{width}x{height} pixels exceeds the {max_pixels:,}-pixel limit "
                    "(possible decompression bomb)",
                    path=label,
                    fix="downscale the image",
                )
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
