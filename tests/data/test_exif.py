"""Photo metadata from EXIF: exact values back, None (never an exception) for anything bad."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from marinelife.data.exif import METADATA_FIELDS, PhotoMetadata, read_photo_metadata


def _exif(
    *,
    when: str | None = "2024:05:01 10:22:33",
    offset: str | None = "+02:00",
    gps: dict[int, object] | None = None,
    ifd0: dict[int, object] | None = None,
) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "OM Digital Solutions"
    exif[0x0110] = "TG-7"
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if when is not None:
        sub[0x9003] = when
    if offset is not None:
        sub[0x9011] = offset
    if gps is not None:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    return exif


def _dms(degrees: int, minutes: int, seconds_x100: int) -> tuple[IFDRational, ...]:
    return (IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds_x100, 100))


# 33°51'54.72"S 151°12'30.00"W, 18.5 m below sea level
DIVE_GPS = {
    1: "S",
    2: _dms(33, 51, 5472),
    3: "W",
    4: _dms(151, 12, 3000),
    5: 1,
    6: IFDRational(185, 10),
}


def _jpeg(tmp_path: Path, exif: Image.Exif | None, name: str = "dive.jpg") -> Path:
    path = tmp_path / name
    image = Image.new("RGB", (16, 12), (10, 80, 160))
    if exif is None:
        image.save(path, "JPEG")
    else:
        image.save(path, "JPEG", exif=exif)
    return path


def test_full_dive_photo_comes_back_exactly(tmp_path: Path) -> None:
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(gps=DIVE_GPS)))
    assert meta.datetime_original == "2024-05-01T10:22:33+02:00"
    assert datetime.fromisoformat(meta.datetime_original).utcoffset().total_seconds() == 7200
    assert meta.latitude == round(-(33 + 51 / 60 + 54.72 / 3600), 7)
    assert meta.longitude == round(-(151 + 12 / 60 + 30 / 3600), 7)
    assert meta.altitude == -18.5
    assert meta.make == "OM Digital Solutions"
    assert meta.model == "TG-7"


def test_north_east_above_sea_level(tmp_path: Path) -> None:
    gps = {1: "N", 2: _dms(10, 30, 0), 3: "E", 4: _dms(20, 15, 0), 5: 0, 6: IFDRational(3, 1)}
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(gps=gps)))
    assert (meta.latitude, meta.longitude, meta.altitude) == (10.5, 20.25, 3.0)


def test_no_offset_is_not_invented(tmp_path: Path) -> None:
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(offset=None)))
    assert meta.datetime_original == "2024-05-01T10:22:33"
    assert datetime.fromisoformat(meta.datetime_original).tzinfo is None


def test_datetime_falls_back_only_when_original_missing(tmp_path: Path) -> None:
    edited = {0x0132: "2025:01:02 03:04:05"}
    with_original = read_photo_metadata(_jpeg(tmp_path, _exif(offset=None, ifd0=edited), "a.jpg"))
    assert with_original.datetime_original == "2024-05-01T10:22:33"
    fallback = read_photo_metadata(_jpeg(tmp_path, _exif(when=None, offset=None, ifd0=edited)))
    assert fallback.datetime_original == "2025-01-02T03:04:05"


@pytest.mark.parametrize(
    ("when", "offset"),
    [("0000:00:00 00:00:00", None), ("2024:13:01 10:00:00", None), ("yesterday", "+02:00")],
)
def test_bad_dates_are_none(tmp_path: Path, when: str, offset: str | None) -> None:
    assert (
        read_photo_metadata(_jpeg(tmp_path, _exif(when=when, offset=offset))).datetime_original
        is None
    )


def test_bad_offset_is_dropped_not_guessed(tmp_path: Path) -> None:
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(offset="+25:00")))
    assert meta.datetime_original == "2024-05-01T10:22:33"


@pytest.mark.parametrize(
    "gps",
    [
        {2: _dms(33, 51, 0), 4: _dms(151, 12, 0)},  # no N/S/E/W: hemisphere unknown
        {
            1: "S",
            2: (IFDRational(1, 0),) * 3,
            3: "W",
            4: (IFDRational(1, 0),) * 3,
        },  # 0 denominators
        {1: "S", 2: _dms(95, 0, 0), 3: "W", 4: _dms(200, 0, 0)},  # out of range
        {1: "S", 2: (IFDRational(1, 1),) * 5, 3: "W", 4: IFDRational(7, 1)},  # wrong shapes
        {1: "X", 2: _dms(33, 51, 0), 3: "Q", 4: _dms(151, 12, 0)},  # not a hemisphere
        {**DIVE_GPS, 9: "V"},  # receiver reported no fix
    ],
)
def test_malformed_gps_is_none(tmp_path: Path, gps: dict[int, object]) -> None:
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(gps=gps)))
    assert (meta.latitude, meta.longitude) == (None, None)
    assert meta.datetime_original == "2024-05-01T10:22:33+02:00"  # the rest still comes back


def test_unknown_altitude_ref_is_none(tmp_path: Path) -> None:
    meta = read_photo_metadata(_jpeg(tmp_path, _exif(gps={**DIVE_GPS, 5: 3})))
    assert meta.altitude is None
    assert meta.latitude is not None


def test_jpeg_without_exif_is_all_none(tmp_path: Path) -> None:
    assert read_photo_metadata(_jpeg(tmp_path, None)) == PhotoMetadata()


def test_broken_exif_bytes_are_all_none(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    Image.new("RGB", (8, 8)).save(path, "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage")
    assert read_photo_metadata(path) == PhotoMetadata()


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe1\x00"])
def test_non_images_are_all_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    assert read_photo_metadata(path) == PhotoMetadata()


def test_missing_file_and_folder_are_all_none(tmp_path: Path) -> None:
    assert read_photo_metadata(tmp_path / "nope.jpg") == PhotoMetadata()
    assert read_photo_metadata(tmp_path) == PhotoMetadata()


def test_png_without_and_with_exif(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGBA", (8, 8)).save(plain)
    assert read_photo_metadata(plain) == PhotoMetadata()
    tagged = tmp_path / "tagged.png"
    Image.new("RGB", (8, 8)).save(tagged, exif=_exif(gps=DIVE_GPS))
    meta = read_photo_metadata(tagged)
    assert meta.model == "TG-7" and meta.altitude == -18.5


def test_pixels_are_never_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels decoded")

    paths = [_jpeg(tmp_path, _exif(gps=DIVE_GPS)), tmp_path / "p.png"]
    Image.new("RGB", (8, 8)).save(paths[1])
    monkeypatch.setattr(Image.Image, "load", refuse)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    assert read_photo_metadata(paths[0]).model == "TG-7"
    # A PNG whose EXIF would sit after the pixels: no decode to look for it, just None.
    assert read_photo_metadata(paths[1]) == PhotoMetadata()


def test_fields_are_stable_and_to_dict_follows_them(tmp_path: Path) -> None:
    assert tuple(f.name for f in dataclasses.fields(PhotoMetadata)) == METADATA_FIELDS
    data = read_photo_metadata(_jpeg(tmp_path, _exif())).to_dict()
    assert tuple(data) == METADATA_FIELDS
    assert data["latitude"] is None and data["model"] == "TG-7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PhotoMetadata().make = "x"  # type: ignore[misc]
