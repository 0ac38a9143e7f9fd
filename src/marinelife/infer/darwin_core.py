"""Predictions → Darwin Core occurrences, written as a Darwin Core Archive GBIF and OBIS accept.

The pipeline is three pure steps: :func:`occurrence_rows` turns prediction records into rows of
Darwin Core terms, :func:`write_dwc_archive` writes them as ``occurrence.txt`` + ``meta.xml``,
and :func:`zip_archive` packs that folder into the single ``.zip`` a data portal uploads.

A prediction record is a plain dict:

=============  ==========================================================================
``file``       str, the photo or video path as the user gave it (→ ``associatedMedia``)
``sha256``     str, hex SHA-256 of the file's bytes (→ ``occurrenceID``)
``label``      str, the predicted class, or ``"unknown"``
``confidence`` float, probability of ``label``
``top_k``      list of ``(label, probability)`` pairs, best first
``unknown``    bool, True when the prediction fell below the model's confidence threshold
``frame``      int, optional: frame number in a video
``time_s``     float, optional: seconds from the start of a video
``metadata``   dict, optional: :meth:`marinelife.data.exif.PhotoMetadata.to_dict`
=============  ==========================================================================

Every record becomes one row with all :data:`OCCURRENCE_COLUMNS` (``""`` where nothing is
known: dates, positions and depths are never invented). ``occurrenceID`` is
``urn:marinelife:<first 16 hex digits of sha256>``, plus ``:t=<milliseconds>`` for a video frame
(``:f=<frame>`` when only the frame number is known). It depends only on the file's content and
the position in it, so re-running on the same footage, or on a renamed copy, gives the same IDs
and a portal updates its records instead of duplicating them.
"""

from __future__ import annotations

import os
import secrets
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from marinelife.errors import MarineLifeError
from marinelife.infer.taxa import Taxon, find_taxon

DWC_TERMS_NS = "http://rs.tdwg.org/dwc/terms/"
DWC_TEXT_NS = "http://rs.tdwg.org/dwc/text/"
OCCURRENCE_FILE = "occurrence.txt"
META_FILE = "meta.xml"
BASIS_OF_RECORD = "MachineObservation"
# identificationVerificationStatus has no controlled vocabulary; "unverified" is the word the
# Darwin Core examples use, the rest says why a reviewer should look.
UNVERIFIED_STATUS = "unverified: below the model's confidence threshold"
_REQUIRED_KEYS = ("file", "sha256", "label", "confidence")

# occurrenceID must stay first: meta.xml declares column 0 as the record identifier.
OCCURRENCE_COLUMNS: tuple[str, ...] = (
    "occurrenceID",
    "basisOfRecord",
    "occurrenceStatus",
    "eventDate",
    "decimalLatitude",
    "decimalLongitude",
    "minimumDepthInMeters",
    "maximumDepthInMeters",
    "scientificName",
    "scientificNameID",
    "taxonRank",
    "vernacularName",
    "identifiedBy",
    "identificationRemarks",
    "identificationVerificationStatus",
    "associatedMedia",
)


def occurrence_rows(
    records: Iterable[Mapping[str, Any]],
    taxonomy: Mapping[str, Taxon],
    *,
    model_name: str,
    model_version: str,
    include_unknown: bool = False,
) -> list[dict[str, str]]:
    """One Darwin Core occurrence row (term → string) per prediction record.

    ``taxonomy`` comes from :func:`marinelife.infer.taxa.load_taxonomy`. Unknown predictions
    (``unknown`` true or label ``"unknown"``) are dropped unless ``include_unknown``; then they
    are kept with an empty ``scientificName`` and ``identificationVerificationStatus`` =
    :data:`UNVERIFIED_STATUS` for a human to review (GBIF needs a scientificName to publish a
    row, so such an archive is a work list, not a publication). Records with the same
    ``occurrenceID`` (byte-identical copies of one photo) are one observation: the first is kept.

    Raises :class:`~marinelife.errors.MarineLifeError` listing every predicted class the
    taxonomy lacks, and ``ValueError`` for a record missing a required key (a caller's bug).
    """
    records = list(records)
    for record in records:
        _require_keys(record)
    check_taxonomy((str(r["label"]) for r in records if not _is_unknown(r)), taxonomy)
    return list(
        iter_occurrence_rows(
            records,
            taxonomy,
            model_name=model_name,
            model_version=model_version,
            include_unknown=include_unknown,
        )
    )


def check_taxonomy(labels: Iterable[str], taxonomy: Mapping[str, Taxon]) -> None:
    """Raise one :class:`~marinelife.errors.MarineLifeError` naming every label not in it.

    ``predict --format dwc`` calls this with the model's classes before predicting anything,
    so a survey never runs for hours only to fail at the export.
    """
    # Every missing class at once: one round of editing the taxonomy file, not one per class.
    missing = sorted({label for label in labels if find_taxon(taxonomy, label) is None})
    if missing:
        raise MarineLifeError(
            f"class(es) {', '.join(repr(name) for name in missing)} not in the taxonomy",
            fix="pass --taxonomy FILE with a row class,scientificName,taxonRank for each",
        )


def iter_occurrence_rows(
    records: Iterable[Mapping[str, Any]],
    taxonomy: Mapping[str, Taxon],
    *,
    model_name: str,
    model_version: str,
    include_unknown: bool = False,
) -> Iterator[dict[str, str]]:
    """:func:`occurrence_rows` one record at a time, for archives too large for a list.

    Check the labels first (:func:`check_taxonomy`); a label missing here still raises, but
    only for that one class. Keeps one set of the ``occurrenceID`` strings seen (for the
    duplicate rule), nothing else.
    """
    identified_by = f"{model_name} {model_version}".strip()
    seen: set[str] = set()
    for record in records:
        _require_keys(record)
        unknown = _is_unknown(record)
        if unknown and not include_unknown:
            continue
        taxon = None if unknown else find_taxon(taxonomy, str(record["label"]))
        if taxon is None and not unknown:
            check_taxonomy([str(record["label"])], taxonomy)  # raises, naming the class
        row = _row(record, taxon)
        if row["occurrenceID"] in seen:
            continue
        seen.add(row["occurrenceID"])
        row["identifiedBy"] = identified_by
        if unknown:
            row["identificationVerificationStatus"] = UNVERIFIED_STATUS
        yield row


def _require_keys(record: Mapping[str, Any]) -> None:
    absent = [key for key in _REQUIRED_KEYS if key not in record]
    if absent:
        raise ValueError(f"prediction record lacks {absent}: {dict(record)!r}")


def occurrence_id(sha256: str, *, time_s: float | None = None, frame: int | None = None) -> str:
    """The stable ``occurrenceID`` for a file's content (and position in a video)."""
    digest = sha256.strip().lower()
    if len(digest) < 16 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ValueError(f"sha256 must be a hex digest, got {sha256!r}")
    base = f"urn:marinelife:{digest[:16]}"
    if time_s is not None:
        return f"{base}:t={round(float(time_s) * 1000)}"
    if frame is not None:
        return f"{base}:f={int(frame)}"
    return base


def _is_unknown(record: Mapping[str, Any]) -> bool:
    return bool(record.get("unknown")) or str(record.get("label", "")).strip().lower() == "unknown"


def _row(record: Mapping[str, Any], taxon: Taxon | None) -> dict[str, str]:
    time_s = record.get("time_s")
    media = str(record["file"])
    if time_s is not None:
        # W3C media fragment: players and portals open the video at the frame's time.
        media += f"#t={round(float(time_s), 3)}"
    metadata = record.get("metadata") or {}
    row = dict.fromkeys(OCCURRENCE_COLUMNS, "")
    row.update(
        occurrenceID=occurrence_id(record["sha256"], time_s=time_s, frame=record.get("frame")),
        basisOfRecord=BASIS_OF_RECORD,
        occurrenceStatus="present",
        eventDate=_event_date(metadata.get("datetime_original")),
        # A caller's own remarks (a video's sighting summary) replace the generic ones.
        identificationRemarks=str(record.get("remarks") or "")
        or _remarks(record["confidence"], record.get("top_k") or []),
        associatedMedia=media,
    )
    row.update(_place(metadata))
    if taxon is not None:
        row.update(
            scientificName=taxon.scientific_name,
            scientificNameID=taxon.scientific_name_id,
            taxonRank=taxon.taxon_rank,
            vernacularName=taxon.class_name,
        )
    return row


def _event_date(value: Any) -> str:
    # Only what parses as ISO 8601 is passed on; a portal rejects the whole row for a bad date.
    if not isinstance(value, str) or not value:
        return ""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return ""
    return value


def _place(metadata: Mapping[str, Any]) -> dict[str, str]:
    place: dict[str, str] = {}
    lat, lon = _finite(metadata.get("latitude")), _finite(metadata.get("longitude"))
    # A latitude without its longitude locates nothing: both or neither.
    if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
        place["decimalLatitude"] = _decimal(lat, 7)
        place["decimalLongitude"] = _decimal(lon, 7)
    altitude = _finite(metadata.get("altitude"))
    # Negative altitude is how dive cameras record depth; a positive one is a boat or the shore,
    # which says nothing about the animal's depth, so no depth is written for it.
    if altitude is not None and altitude < 0:
        depth = _decimal(-altitude, 3)
        place["minimumDepthInMeters"] = place["maximumDepthInMeters"] = depth
    return place


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _decimal(value: float, digits: int) -> str:
    # Fixed-point, never "1e-07": Darwin Core decimal terms are plain decimal numbers.
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _remarks(confidence: Any, top_k: Sequence[Any]) -> str:
    remarks = f"confidence {float(confidence):.3f}"
    pairs = [f"{label} {float(prob):.3f}" for label, prob in top_k]
    if pairs:
        remarks += f"; top-{len(pairs)}: {', '.join(pairs)}"
    return remarks


def _clean(value: Any) -> str:
    # The file has no quoting (fieldsEnclosedBy=""), so a tab or newline inside a value would
    # shift every later column; they become spaces.
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_dwc_archive(
    rows: Iterable[Mapping[str, str]], out_dir: Path, *, overwrite: bool = False
) -> Path:
    """Write ``rows`` as a Darwin Core Archive folder: ``occurrence.txt`` + ``meta.xml``.

    ``occurrence.txt`` is tab-separated UTF-8 with one header line, ``\\n`` line ends and no
    quoting, as GBIF's IPT writes it; ``meta.xml`` declares exactly that and maps every column,
    in order, to its Darwin Core term URI, with column 0 (``occurrenceID``) as the record id.
    ``rows`` may be a generator: they are written as they come. Each file is written to a
    temporary name and renamed, so an interrupted run never leaves a half-written file. Returns
    ``out_dir``. Refuses, with a :class:`~marinelife.errors.MarineLifeError`, to replace an
    existing archive unless ``overwrite``. Zero rows give a header-only archive (the caller
    decides if that is an error).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MarineLifeError(
            "exists and is not a folder", path=out_dir, fix="choose a folder for the archive"
        )
    for name in (OCCURRENCE_FILE, META_FILE):
        target = out_dir / name
        if target.exists() and not overwrite:
            raise MarineLifeError(
                "already exists; not replacing it",
                path=target,
                fix="choose another output folder, or pass --overwrite to replace it",
            )
    columns = list(OCCURRENCE_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / OCCURRENCE_FILE
    tmp = _temp_name(target)
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as handle:
            handle.write("\t".join(columns) + "\n")
            ids: set[str] = set()
            for row in rows:
                extra = set(row) - set(columns)
                if extra:
                    raise ValueError(
                        f"not Darwin Core columns this archive declares: {sorted(extra)}"
                    )
                record_id = row.get("occurrenceID", "")
                if not record_id or record_id in ids:
                    raise ValueError(f"occurrenceID must be present and unique, got {record_id!r}")
                ids.add(record_id)
                handle.write("\t".join(_clean(row.get(column, "")) for column in columns) + "\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _atomic_write_text(out_dir / META_FILE, meta_xml(columns))
    return out_dir


def meta_xml(columns: Sequence[str], *, location: str = OCCURRENCE_FILE) -> str:
    """The ``meta.xml`` text describing an occurrence core file with these columns."""
    archive = ET.Element("archive", {"xmlns": DWC_TEXT_NS})
    core = ET.SubElement(
        archive,
        "core",
        {
            "encoding": "UTF-8",
            # Escape sequences, written literally, are how the Darwin Core text guide spells them.
            "fieldsTerminatedBy": "\\t",
            "linesTerminatedBy": "\\n",
            "fieldsEnclosedBy": "",
            "ignoreHeaderLines": "1",
            "rowType": f"{DWC_TERMS_NS}Occurrence",
        },
    )
    ET.SubElement(ET.SubElement(core, "files"), "location").text = location
    ET.SubElement(core, "id", {"index": "0"})
    for index, column in enumerate(columns):
        ET.SubElement(core, "field", {"index": str(index), "term": f"{DWC_TERMS_NS}{column}"})
    ET.indent(archive)
    body = ET.tostring(archive, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def zip_archive(out_dir: Path, zip_path: Path | None = None, *, overwrite: bool = False) -> Path:
    """Pack an archive folder into ``zip_path`` (default: ``<out_dir>.zip`` beside it).

    The data files sit at the root of the zip, where the Darwin Core text guide requires them.
    Refuses to replace an existing zip unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    zip_path = Path(zip_path) if zip_path is not None else out_dir.with_name(out_dir.name + ".zip")
    for name in (META_FILE, OCCURRENCE_FILE):
        if not (out_dir / name).is_file():
            raise MarineLifeError(
                f"no {name} here, so this is not a Darwin Core archive folder",
                path=out_dir,
                fix="write the archive first (write_dwc_archive), then zip it",
            )
    if zip_path.exists() and not overwrite:
        raise MarineLifeError(
            "already exists; not replacing it",
            path=zip_path,
            fix="choose another name, or pass --overwrite to replace it",
        )
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(zip_path)
    try:
        with zipfile.ZipFile(tmp, "x", zipfile.ZIP_DEFLATED) as zf:
            for name in (META_FILE, OCCURRENCE_FILE):
                zf.write(out_dir / name, arcname=name)
        os.replace(tmp, zip_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return zip_path


def _temp_name(path: Path) -> Path:
    # Not mkstemp: its files are private (0600), and users share these archives with colleagues.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _atomic_write_text(path: Path, text: str) -> None:
    # Local on purpose: the shared helper is moving modules, and this needs only a few lines.
    tmp = _temp_name(path)
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
