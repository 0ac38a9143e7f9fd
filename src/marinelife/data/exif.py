"""When, where and with what a photo was taken, from its EXIF block (best effort, never pixels).

:func:`read_photo_metadata` opens the file with Pillow only far enough to read the header, so it
costs about the same for a 40 MP photo as for a thumbnail. Every field is optional: a value that
is missing, unset by the camera (``0000:00:00 00:00:00``) or malformed comes back as ``None``
rather than a guess, and nothing here raises for a bad file: a damaged EXIF block, or a file that
is no image at all, gives an all-``None`` :class:`PhotoMetadata`. Reporting undecodable images is
:func:`marinelife.data.image_io.load_image`'s job, so the two never disagree about one file.

HEIC/HEIF photos work when ``pillow-heif`` has registered its opener (``register_heif_opener()``);
this module neither needs nor registers it.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

# Column order for CSV/JSON output; kept equal to PhotoMetadata's field order (a test checks).
METADATA_FIELDS: tuple[str, ...] = (
    "datetime_original",
    "latitude",
    "longitude",
    "altitude",
    "make",
    "model",
)

# Tag numbers from the EXIF 2.32 specification (CIPA DC-008).
_MAKE, _MODEL, _DATETIME = 0x010F, 0x0110, 0x0132
_OFFSET_TIME, _DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9010, 0x9003, 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_GPS_ALT_REF, _GPS_ALT, _GPS_STATUS = 5, 6, 9

# Cameras write "YYYY:MM:DD HH:MM:SS"; a few phone apps use dashes or a "T": accept both.
_DATETIME_RE = re.compile(r"^(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})$")
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_COORD_DIGITS = 7  # ~1 cm at the equator: more than any camera GPS resolves
_ALT_DIGITS = 3


@dataclass(frozen=True)
class PhotoMetadata:
    """What a photo's EXIF says; ``None`` wherever it says nothing usable.

    ``datetime_original``: ISO 8601 local time of capture, with the UTC offset only when the
    camera recorded one (``"2024-05-01T10:22:33+02:00"`` or ``"2024-05-01T10:22:33"``).
    ``latitude``/``longitude``: WGS 84 decimal degrees, south and west negative.
    ``altitude``: metres relative to sea level; negative below it (how dive cameras and housings
    with depth sensors record depth).
    """

    datetime_original: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    make: str | None = None
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Field name → value in :data:`METADATA_FIELDS` order (``None`` kept, for JSON/CSV)."""
        values = asdict(self)
        return {name: values[name] for name in METADATA_FIELDS}


def read_photo_metadata(path: Path) -> PhotoMetadata:
    """Read capture time, GPS position, altitude/depth and camera from ``path``'s EXIF.

    The capture time is EXIF ``DateTimeOriginal`` (+ ``OffsetTimeOriginal``). Only when
    ``DateTimeOriginal`` is absent or malformed does it fall back to ``DateTime`` (0x0132,
    + ``OffsetTime``), which many cameras set at capture but editors rewrite on every save, so
    it may be the time of the last edit rather than of the dive.

    Never raises for a bad or non-image file (see the module docstring); never decodes pixels.
    """
    try:
        with warnings.catch_warnings():
            # A huge panorama warns about decompression bombs; header reading is harmless.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                exif = _header_exif(img)
                return _from_exif(exif)
    except Exception:  # noqa: BLE001 - metadata is best effort; a damaged file must not stop a run
        return PhotoMetadata()


def _header_exif(img: Image.Image) -> Image.Exif:
    # PngImageFile.getexif() decodes the whole image to look for an eXIf chunk after the pixel
    # data; the base implementation reads only what the header already gave us.
    if img.format == "PNG":
        return Image.Image.getexif(img)
    return img.getexif()


def _from_exif(exif: Image.Exif) -> PhotoMetadata:
    # Each group is read on its own so that one malformed IFD does not hide the others.
    exif_ifd = _safe_ifd(exif, ExifTags.IFD.Exif)
    gps_ifd = _safe_ifd(exif, ExifTags.IFD.GPSInfo)
    when = _iso_datetime(exif_ifd.get(_DATETIME_ORIGINAL), exif_ifd.get(_OFFSET_TIME_ORIGINAL))
    if when is None:
        when = _iso_datetime(_safe_get(exif, _DATETIME), exif_ifd.get(_OFFSET_TIME))
    latitude, longitude = _position(gps_ifd)
    return PhotoMetadata(
        datetime_original=when,
        latitude=latitude,
        longitude=longitude,
        altitude=_guard(_altitude, gps_ifd),
        make=_text(_safe_get(exif, _MAKE)),
        model=_text(_safe_get(exif, _MODEL)),
    )


def _safe_ifd(exif: Image.Exif, ifd: ExifTags.IFD) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(ifd))
    except Exception:  # noqa: BLE001 - a pointer to garbage is just "no such IFD"
        return {}


def _safe_get(exif: Image.Exif, tag: int) -> Any:
    try:
        return exif.get(tag)
    except Exception:  # noqa: BLE001 - Exif decodes lazily, so a bad tag can fail on access
        return None


def _guard(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except (TypeError, ValueError, ArithmeticError, IndexError):
        return None


def _text(value: Any) -> str | None:
    """An EXIF ASCII value as a clean string: NUL padding and blanks removed, bytes decoded."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    cleaned = value.split("\x00", 1)[0].strip()
    return cleaned or None


def _iso_datetime(value: Any, offset: Any) -> str | None:
    text = _text(value)
    match = _DATETIME_RE.match(text) if text else None
    if match is None:
        return None
    try:
        stamp = datetime(*(int(part) for part in match.groups()))
    except ValueError:  # "0000:00:00 00:00:00" (clock never set), month 13, ...
        return None
    zone = _utc_offset(offset)
    return (stamp.replace(tzinfo=zone) if zone else stamp).isoformat()


def _utc_offset(value: Any) -> timezone | None:
    text = _text(value)
    match = _OFFSET_RE.match(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    # Real UTC offsets run from -12:00 to +14:00; anything else is garbage, not a time zone.
    if hours > 14 or minutes >= 60:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if sign == "-" else delta)


def _number(value: Any) -> float | None:
    number = float(value)  # IFDRational with a zero denominator becomes nan here
    return number if math.isfinite(number) else None


def _degrees(value: Any, limit: float) -> float | None:
    """EXIF (degrees, minutes, seconds) rationals → unsigned decimal degrees."""
    if not isinstance(value, tuple | list):
        value = (value,)  # Pillow unwraps a one-value tag; some writers store decimal degrees
    if not 1 <= len(value) <= 3:
        return None
    parts = [_number(part) for part in value]
    if any(part is None or part < 0 for part in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    degrees, minutes, seconds = parts
    if minutes >= 60 or seconds >= 60:
        return None
    total = degrees + minutes / 60 + seconds / 3600
    return total if total <= limit else None


def _position(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    # GPSStatus "V" means the receiver had no fix: the coordinates are stale or zero.
    if _text(gps.get(_GPS_STATUS)) == "V":
        return None, None
    latitude = _guard(_signed, gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "N", "S", 90.0)
    longitude = _guard(_signed, gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "E", "W", 180.0)
    # Half a position locates nothing and hints at a corrupt block: both or neither.
    if latitude is None or longitude is None:
        return None, None
    return latitude, longitude


def _signed(value: Any, ref: Any, positive: str, negative: str, limit: float) -> float | None:
    # Without its reference letter a coordinate's hemisphere is unknown: no guessing.
    ref_text = (_text(ref) or "").upper()
    if ref_text not in (positive, negative):
        return None
    degrees = _degrees(value, limit)
    if degrees is None:
        return None
    signed = -degrees if ref_text == negative else degrees
    return round(signed, _COORD_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _altitude(gps: dict[int, Any]) -> float | None:
    if _GPS_ALT not in gps:
        return None
    metres = _number(gps[_GPS_ALT])
    if metres is None or metres < 0:
        return None
    ref = gps.get(_GPS_ALT_REF, 0)  # the EXIF default when the tag is absent: above sea level
    if isinstance(ref, bytes):
        ref = ref[0] if len(ref) == 1 else None
    elif isinstance(ref, tuple) and len(ref) == 1:
        ref = ref[0]
    # EXIF 3.0 adds 2/3 for heights above/below the ellipsoid, which differ from sea level by
    # up to ~100 m: not a depth, so they are left out rather than misreported.
    if ref == 0:
        return round(metres, _ALT_DIGITS) + 0.0
    if ref == 1:
        return -round(metres, _ALT_DIGITS) + 0.0
    return None
