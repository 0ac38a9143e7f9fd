"""Class name → scientific name: the map that turns a model's labels into Darwin Core taxa.

A taxonomy file is a UTF-8 CSV with the header ``class,scientificName,taxonRank`` and an
optional ``scientificNameID`` column (other columns are ignored)::

    class,scientificName,taxonRank,scientificNameID
    Octopus,Octopoda,order,
    Manta,Mobula birostris,species,urn:lsid:marinespecies.org:taxname:<AphiaID>

``class`` is the model's class name (matched case-insensitively), ``taxonRank`` a rank word from
the GBIF rank vocabulary (:data:`TAXON_RANKS`). ``scientificNameID`` should be a resolvable
identifier (a WoRMS LSID, a GBIF taxon URL) and is exported only when given.

The shipped map (``taxonomy/sea-animals.csv``, for the 23 folders of the Kaggle Sea Animals
dataset) names each class at the rank its common name really means. The rule: the smallest taxon
that contains everything the common name covers, because a coarse identification is merely less
useful while a too-fine one is wrong. Where that taxon would swallow other classes of this map
(crabs, lobsters and shrimps share nothing narrower than Decapoda), the common name's core
meaning is used instead. The judgement calls:

* **Whale → Cetacea, infraorder.** "Whales" without dolphins and porpoises is not a taxon, so
  the smallest one holding them all is Cetacea. WoRMS (the register OBIS uses) places Cetacea as
  an infraorder of Artiodactyla since cetaceans were shown to be nested in even-toed ungulates;
  older checklists still call it an order.
* **Seal → Pinnipedia, infraorder.** People call sea lions and fur seals "seals" too, so Phocidae
  (true seals) is too narrow. Pinnipedia is a clade with no agreed Linnaean rank (suborder,
  infraorder or superfamily by different authors); "infraorder" is the closest standard word.
* **Jelly Fish → Medusozoa, subphylum.** "Jellyfish" covers true jellyfish (Scyphozoa) but also
  box jellies (Cubozoa), stalked jellies (Staurozoa) and hydromedusae such as the Portuguese
  man o' war (Hydrozoa); Scyphozoa would misname those.
* **Fish → Actinopterygii, class.** "Fish" is paraphyletic (it would have to include all
  tetrapods); sharks and rays have their own classes here, so the photos left are ray-finned.
* **Lobster → Nephropidae, family.** Clawed lobsters, the animal the word most often names.
  Spiny lobsters (Palinuridae) and slipper lobsters (Scyllaridae), common on tropical reefs, are
  not related closely enough to share a useful taxon: if your footage is mostly those, pass
  ``--taxonomy`` with ``Lobster,Achelata,infraorder``.
* **Crabs → Brachyura, Shrimp → Caridea (infraorders).** True crabs and caridean shrimps (cleaner
  and anemone shrimps included); hermit and king crabs (Anomura), banded coral shrimps
  (Stenopodidea), prawns (Dendrobranchiata) and mantis shrimps (Stomatopoda) are outside them.
* **Squid → Teuthida, order.** A traditional grouping kept for clarity; current classifications
  split it into the orders Myopsida and Oegopsida, which share no taxon short of Decapodiformes
  (which would add cuttlefish).
* **Sharks → Selachimorpha, Sea Rays → Batoidea (superorders)**; **Otter → Lutrinae**
  (subfamily: sea otters and river otters both); **Corals → Anthozoa** (class; also includes sea
  anemones, while fire corals are hydrozoans); **Eel → Anguilliformes** (true eels, morays
  included).

No ``scientificNameID`` is shipped: identifiers that cannot be verified offline are not guessed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from marinelife.errors import MarineLifeError

REQUIRED_COLUMNS = ("class", "scientificName", "taxonRank")
OPTIONAL_COLUMNS = ("scientificNameID",)
SHIPPED_TAXONOMY = "sea-animals.csv"

# Ranks from the GBIF rank vocabulary (rs.gbif.org/vocabulary/gbif/rank) that a photo class can
# plausibly mean; Darwin Core recommends a controlled vocabulary for taxonRank.
TAXON_RANKS = frozenset(
    {
        "kingdom",
        "subkingdom",
        "superphylum",
        "phylum",
        "subphylum",
        "infraphylum",
        "superclass",
        "class",
        "subclass",
        "infraclass",
        "superorder",
        "order",
        "suborder",
        "infraorder",
        "parvorder",
        "superfamily",
        "family",
        "subfamily",
        "tribe",
        "subtribe",
        "genus",
        "subgenus",
        "species",
        "subspecies",
        "variety",
        "form",
    }
)


@dataclass(frozen=True)
class Taxon:
    """One row of a taxonomy file; ``scientific_name_id`` is ``""`` when not given."""

    class_name: str
    scientific_name: str
    taxon_rank: str
    scientific_name_id: str = ""


def load_taxonomy(path: Path | None = None) -> dict[str, Taxon]:
    """Read a taxonomy CSV (``None``: the shipped Sea Animals map), keyed by casefolded class.

    Look labels up with :func:`find_taxon` (it casefolds for you). Raises
    :class:`~marinelife.errors.MarineLifeError` naming the file, the line and the fix for a
    missing file or column, an empty class or scientificName, an unknown rank word or a class
    listed twice.
    """
    if path is None:
        source = resources.files("marinelife.infer").joinpath("taxonomy", SHIPPED_TAXONOMY)
        return parse_taxonomy(source.read_text(encoding="utf-8"), label=SHIPPED_TAXONOMY)
    path = Path(path)
    fix = "pass --taxonomy a CSV file with the header class,scientificName,taxonRank"
    if not path.is_file():
        raise MarineLifeError("taxonomy file not found", path=path, fix=fix)
    try:
        # utf-8-sig: spreadsheets saving "CSV UTF-8" put a byte-order mark before the header.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MarineLifeError(f"cannot read taxonomy ({exc})", path=path, fix=fix) from exc
    return parse_taxonomy(text, label=str(path))


def parse_taxonomy(text: str, *, label: str = "<taxonomy>") -> dict[str, Taxon]:
    """:func:`load_taxonomy` on CSV text; ``label`` names the source in error messages."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise MarineLifeError(
            "taxonomy file is empty",
            path=label,
            fix="start it with the header line class,scientificName,taxonRank",
        )
    # Header names are matched case-insensitively: "ScientificName" typed by hand still works.
    positions = {cell.strip().casefold(): i for i, cell in enumerate(header)}
    missing = [name for name in REQUIRED_COLUMNS if name.casefold() not in positions]
    if missing:
        raise MarineLifeError(
            f"line 1: missing column(s) {', '.join(missing)} (header is {','.join(header)})",
            path=label,
            fix="the header must be class,scientificName,taxonRank[,scientificNameID]",
        )
    columns = {name: positions.get(name.casefold()) for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    taxa: dict[str, Taxon] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines (a trailing newline in a spreadsheet export) carry nothing

        def cell(name: str, row: list[str] = row) -> str:
            index = columns[name]
            return row[index].strip() if index is not None and index < len(row) else ""

        taxon = _validated_row(cell, line, label)
        key = taxon.class_name.casefold()
        if key in taxa:
            raise MarineLifeError(
                f"line {line}: class {taxon.class_name!r} is already listed on line "
                f"{first_line[key]}",
                path=label,
                fix="keep one row per class (class names are matched ignoring case)",
            )
        taxa[key] = taxon
        first_line[key] = line
    if not taxa:
        raise MarineLifeError(
            "taxonomy file has a header but no classes",
            path=label,
            fix="add one row per class: class,scientificName,taxonRank",
        )
    return taxa


def _validated_row(cell: Callable[[str], str], line: int, label: str) -> Taxon:
    class_name, name, rank = cell("class"), cell("scientificName"), cell("taxonRank").lower()
    if not class_name:
        raise MarineLifeError(
            f"line {line}: empty class",
            path=label,
            fix="write the model's class name (its folder name) in the first column",
        )
    if not name:
        raise MarineLifeError(
            f"line {line}: empty scientificName for class {class_name!r}",
            path=label,
            fix="give the scientific name of the taxon this class means, e.g. Octopoda",
        )
    if rank not in TAXON_RANKS:
        shown = cell("taxonRank") or "(empty)"
        raise MarineLifeError(
            f"line {line}: unknown taxonRank {shown!r} for class {class_name!r}",
            path=label,
            fix=f"use one of: {', '.join(sorted(TAXON_RANKS))}",
        )
    return Taxon(class_name, name, rank, cell("scientificNameID"))


def find_taxon(taxonomy: Mapping[str, Taxon], label: str) -> Taxon | None:
    """The taxon for a predicted class label, ignoring case and surrounding blanks."""
    return taxonomy.get(label.strip().casefold())
