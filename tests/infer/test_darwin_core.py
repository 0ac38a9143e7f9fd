"""Darwin Core export: exact term names, stable IDs, honest empties, a meta.xml that matches."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from marinelife.data.exif import read_photo_metadata
from marinelife.errors import MarineLifeError
from marinelife.infer.darwin_core import (
    BASIS_OF_RECORD,
    DWC_TERMS_NS,
    DWC_TEXT_NS,
    OCCURRENCE_COLUMNS,
    UNVERIFIED_STATUS,
    occurrence_id,
    occurrence_rows,
    write_dwc_archive,
    zip_archive,
)
from marinelife.infer.taxa import TAXON_RANKS, find_taxon, load_taxonomy, parse_taxonomy

SEA_ANIMALS = [
    "Clams",
    "Corals",
    "Crabs",
    "Dolphin",
    "Eel",
    "Fish",
    "Jelly Fish",
    "Lobster",
    "Nudibranchs",
    "Octopus",
    "Otter",
    "Penguin",
    "Puffers",
    "Sea Rays",
    "Sea Urchins",
    "Seahorse",
    "Seal",
    "Sharks",
    "Shrimp",
    "Squid",
    "Starfish",
    "Turtle_Tortoise",
    "Whale",
]

DIVE_META = {
    "datetime_original": "2024-05-01T10:22:33+02:00",
    "latitude": -33.8652,
    "longitude": 151.2083333,
    "altitude": -18.5,
    "make": "OM Digital Solutions",
    "model": "TG-7",
}


def _record(name: str = "a.jpg", label: str = "Sharks", **extra: Any) -> dict[str, Any]:
    record = {
        "file": f"dives/{name}",
        "sha256": hashlib.sha256(name.encode()).hexdigest(),
        "label": label,
        "confidence": 0.912,
        "top_k": [(label, 0.912), ("Whale", 0.05), ("Dolphin", 0.02)],
        "unknown": label == "unknown",
    }
    record.update(extra)
    return record


def _rows(records: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, str]]:
    return occurrence_rows(
        records, load_taxonomy(None), model_name="lite0", model_version="1.2", **kwargs
    )


@pytest.fixture(scope="module")
def shipped() -> dict:
    return load_taxonomy(None)


def test_row_has_exact_terms_and_values() -> None:
    (row,) = _rows([_record(metadata=DIVE_META)])
    assert tuple(row) == OCCURRENCE_COLUMNS
    assert row["basisOfRecord"] == BASIS_OF_RECORD == "MachineObservation"
    assert row["occurrenceStatus"] == "present"
    assert row["scientificName"] == "Selachimorpha"
    assert row["taxonRank"] == "superorder"
    assert row["vernacularName"] == "Sharks"
    assert row["scientificNameID"] == ""
    assert row["identifiedBy"] == "lite0 1.2"
    assert row["identificationRemarks"] == (
        "confidence 0.912; top-3: Sharks 0.912, Whale 0.050, Dolphin 0.020"
    )
    assert row["associatedMedia"] == "dives/a.jpg"
    assert row["identificationVerificationStatus"] == ""
    assert datetime.fromisoformat(row["eventDate"]).utcoffset().total_seconds() == 7200
    assert (row["decimalLatitude"], row["decimalLongitude"]) == ("-33.8652", "151.2083333")
    assert row["minimumDepthInMeters"] == row["maximumDepthInMeters"] == "18.5"


def test_no_metadata_means_empty_not_invented() -> None:
    (row,) = _rows([_record()])
    for term in ("eventDate", "decimalLatitude", "decimalLongitude", "minimumDepthInMeters"):
        assert row[term] == ""
    bad = {"datetime_original": "01/05/2024", "latitude": -33.0, "longitude": None}
    (row,) = _rows([_record(metadata=bad)])
    assert row["eventDate"] == row["decimalLatitude"] == row["decimalLongitude"] == ""


@pytest.mark.parametrize(
    ("altitude", "depth"), [(-18.5, "18.5"), (0.0, ""), (12.0, ""), (None, "")]
)
def test_depth_only_when_altitude_negative(altitude: float | None, depth: str) -> None:
    (row,) = _rows([_record(metadata={**DIVE_META, "altitude": altitude})])
    assert row["minimumDepthInMeters"] == row["maximumDepthInMeters"] == depth


def test_ids_are_stable_and_distinct() -> None:
    records = [
        _record("a.jpg"),
        _record("b.jpg"),
        _record("clip.mp4", frame=300, time_s=12.0),
        _record("clip.mp4", frame=301, time_s=12.04),
    ]
    first, second = _rows(records), _rows(records)
    ids = [row["occurrenceID"] for row in first]
    assert ids == [row["occurrenceID"] for row in second]
    assert len(set(ids)) == 4
    digest = records[2]["sha256"][:16]
    assert ids[2] == f"urn:marinelife:{digest}:t=12000"
    assert ids[3] == f"urn:marinelife:{digest}:t=12040"
    assert ids[0] == f"urn:marinelife:{records[0]['sha256'][:16]}"
    assert first[2]["associatedMedia"] == "dives/clip.mp4#t=12.0"
    assert occurrence_id("ab" * 32, frame=7) == f"urn:marinelife:{'ab' * 8}:f=7"


def test_renamed_copy_keeps_id_and_duplicates_collapse() -> None:
    original = _record("a.jpg")
    copy = {**original, "file": "elsewhere/renamed.jpg"}
    rows = _rows([original, copy])
    assert len(rows) == 1 and rows[0]["associatedMedia"] == "dives/a.jpg"


def test_unknown_excluded_by_default_and_flagged_when_included() -> None:
    records = [_record("a.jpg"), _record("b.jpg", "unknown"), _record("c.jpg", unknown=True)]
    assert [row["associatedMedia"] for row in _rows(records)] == ["dives/a.jpg"]
    rows = _rows(records, include_unknown=True)
    assert len(rows) == 3
    for row in rows[1:]:
        assert row["scientificName"] == row["taxonRank"] == ""
        assert row["identificationVerificationStatus"] == UNVERIFIED_STATUS
        assert row["identificationRemarks"].startswith("confidence 0.912")


def test_class_missing_from_taxonomy_names_it_and_the_fix() -> None:
    with pytest.raises(MarineLifeError) as err:
        _rows([_record("a.jpg", "Manta"), _record("b.jpg", "Nautilus"), _record("c.jpg")])
    message = str(err.value)
    assert "'Manta'" in message and "'Nautilus'" in message and "--taxonomy" in message


def test_record_missing_a_key_is_a_bug() -> None:
    record = _record()
    del record["sha256"]
    with pytest.raises(ValueError, match="sha256"):
        _rows([record])


def test_shipped_map_covers_all_classes(shipped: dict) -> None:
    assert len(shipped) == 23
    for name in SEA_ANIMALS:
        taxon = find_taxon(shipped, name)
        assert taxon is not None and taxon.class_name == name
        assert taxon.scientific_name.strip() and " " not in taxon.scientific_name
        assert taxon.taxon_rank in TAXON_RANKS
        assert taxon.scientific_name_id == ""
    assert find_taxon(shipped, "  octopus ").scientific_name == "Octopoda"
    assert find_taxon(shipped, "SEAHORSE").taxon_rank == "genus"


def test_custom_taxonomy_file(tmp_path: Path) -> None:
    path = tmp_path / "tax.csv"
    path.write_text(
        "\ufeffClass,scientificName,taxonRank,scientificNameID,notes\n"
        "Manta,Mobula birostris,Species,urn:example:1,ignored\n\n"
    )
    taxonomy = load_taxonomy(path)
    rows = occurrence_rows([_record("m.jpg", "manta")], taxonomy, model_name="m", model_version="v")
    assert rows[0]["scientificName"] == "Mobula birostris"
    assert rows[0]["taxonRank"] == "species"
    assert rows[0]["scientificNameID"] == "urn:example:1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("class,scientificName\nOctopus,Octopoda\n", "line 1: missing column(s) taxonRank"),
        ("class,scientificName,taxonRank\nOctopus,Octopoda,order\nSquid,,order\n", "line 3"),
        ("class,scientificName,taxonRank\nOctopus,Octopoda,clade\n", "line 2: unknown taxonRank"),
        ("class,scientificName,taxonRank\n,Octopoda,order\n", "line 2: empty class"),
        ("class,scientificName,taxonRank\nA,X,order\na,Y,order\n", "already listed on line 2"),
        ("class,scientificName,taxonRank\n", "no classes"),
        ("", "empty"),
    ],
)
def test_bad_taxonomy_names_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MarineLifeError) as err:
        load_taxonomy(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value) and err.value.fix


def test_missing_taxonomy_file(tmp_path: Path) -> None:
    with pytest.raises(MarineLifeError, match="not found"):
        load_taxonomy(tmp_path / "none.csv")


def test_parse_taxonomy_labels_errors() -> None:
    with pytest.raises(MarineLifeError, match="mine.csv"):
        parse_taxonomy("class,scientificName,taxonRank\nA,,order\n", label="mine.csv")


def _archive(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    records = [
        _record("a.jpg", metadata=DIVE_META),
        _record("clip.mp4", "Octopus", frame=3, time_s=0.125),
        _record("b.jpg", "unknown"),
    ]
    rows = _rows(records, include_unknown=True)
    return write_dwc_archive(rows, tmp_path / "dwca"), rows


def test_archive_files_and_meta_xml_match(tmp_path: Path) -> None:
    out, rows = _archive(tmp_path)
    text = (out / "occurrence.txt").read_text(encoding="utf-8")
    assert "\r" not in text
    table = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert tuple(table[0]) == OCCURRENCE_COLUMNS
    assert [dict(zip(table[0], line)) for line in table[1:]] == rows

    root = ET.parse(out / "meta.xml").getroot()
    ns = {"a": DWC_TEXT_NS}
    assert root.tag == f"{{{DWC_TEXT_NS}}}archive"
    core = root.find("a:core", ns)
    assert core.get("rowType") == f"{DWC_TERMS_NS}Occurrence"
    assert core.get("encoding") == "UTF-8"
    assert core.get("fieldsTerminatedBy") == "\\t"
    assert core.get("linesTerminatedBy") == "\\n"
    assert core.get("fieldsEnclosedBy") == ""
    assert core.get("ignoreHeaderLines") == "1"
    assert core.find("a:files/a:location", ns).text == "occurrence.txt"
    assert core.find("a:id", ns).get("index") == "0"
    fields = core.findall("a:field", ns)
    assert [int(f.get("index")) for f in fields] == list(range(len(table[0])))
    assert [f.get("term") for f in fields] == [DWC_TERMS_NS + name for name in table[0]]
    assert fields[0].get("term").endswith("/occurrenceID")


def test_tabs_and_newlines_in_values_do_not_break_columns(tmp_path: Path) -> None:
    rows = _rows([_record("odd\tname\n.jpg")])
    out = write_dwc_archive(rows, tmp_path / "dwca")
    lines = (out / "occurrence.txt").read_text().splitlines()
    assert len(lines) == 2 and len(lines[1].split("\t")) == len(OCCURRENCE_COLUMNS)


def test_refuses_overwrite_unless_asked(tmp_path: Path) -> None:
    out, rows = _archive(tmp_path)
    before = (out / "occurrence.txt").read_bytes()
    with pytest.raises(MarineLifeError) as err:
        write_dwc_archive(rows[:1], out)
    assert "occurrence.txt" in str(err.value) and "--overwrite" in str(err.value)
    assert (out / "occurrence.txt").read_bytes() == before
    write_dwc_archive(rows[:1], out, overwrite=True)
    assert len((out / "occurrence.txt").read_text().splitlines()) == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_out_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(MarineLifeError, match="not a folder"):
        write_dwc_archive([], target)


def test_zip_archive(tmp_path: Path) -> None:
    out, _ = _archive(tmp_path)
    zipped = zip_archive(out)
    assert zipped == tmp_path / "dwca.zip"
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == ["meta.xml", "occurrence.txt"]
        assert zf.read("occurrence.txt") == (out / "occurrence.txt").read_bytes()
    with pytest.raises(MarineLifeError, match="already exists"):
        zip_archive(out)
    assert zip_archive(out, overwrite=True) == zipped
    with pytest.raises(MarineLifeError, match="not a Darwin Core archive"):
        zip_archive(tmp_path / "empty")


def test_photo_exif_flows_into_the_occurrence(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif).update({0x9003: "2023:11:20 07:05:00", 0x9011: "-05:00"})
    gps = {1: "N", 2: (IFDRational(25, 1),) * 1, 3: "W", 4: (IFDRational(80, 1),), 5: 1}
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({**gps, 6: IFDRational(7, 1)})
    photo = tmp_path / "reef.jpg"
    Image.new("RGB", (8, 8)).save(photo, exif=exif)
    record = _record("reef.jpg", "Turtle_Tortoise")
    record.update(file=str(photo), metadata=read_photo_metadata(photo).to_dict())
    (row,) = _rows([record])
    assert row["eventDate"] == "2023-11-20T07:05:00-05:00"
    assert (row["decimalLatitude"], row["decimalLongitude"]) == ("25", "-80")
    assert row["maximumDepthInMeters"] == "7"
    assert row["scientificName"] == "Testudines"
