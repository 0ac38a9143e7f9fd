"""The ``--out`` folder of `marinelife predict`: what may be written, resumed and merged there.

* A folder that already holds files is refused unless ``--resume`` (continue the results in it)
  or ``--overwrite`` (replace the files predict writes; nothing else is touched).
* ``--resume`` reads the results file (``predictions.csv`` or ``.json``), cuts a last row that
  an interrupted run left half-written, and hands back the paths already done, so nothing is
  predicted twice. A file written with other columns (another ``--top-k`` or ``--format``) is
  refused rather than mixed.
* Under torchrun each rank writes ``.parts/rank<N>.<ext>``; rank 0 appends them, in input order,
  to the results file and removes them. Parts an interrupted torchrun run left behind are
  folded in by the next ``--resume`` (their rows are complete; only their order is lost).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from marinelife.errors import MarineLifeError
from marinelife.infer.predict_output import (
    CsvWriter,
    JsonWriter,
    csv_columns_of,
    read_records,
)
from marinelife.infer.sharding import Shard, interleave

PARTS = ".parts"


@dataclass
class ResultsDir:
    """``folder`` holding ``predictions.<ext>``; ``columns`` is the CSV header (unused for JSON)."""

    folder: Path
    ext: str  # "csv" or "json"
    columns: list[str]
    done: set[str] = field(default_factory=set)
    records: int = 0  # rows already in the results file (kept by --resume)

    @property
    def results(self) -> Path:
        return self.folder / f"predictions.{self.ext}"

    def part(self, rank: int) -> Path:
        return self.folder / PARTS / f"rank{rank}.{self.ext}"

    # ----------------------------------------------------------------- before predicting
    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse a folder whose files the user did not ask to continue or replace."""
        if self.folder.exists() and not self.folder.is_dir():
            raise MarineLifeError(
                "exists and is not a folder", path=self.folder, fix="give --out a folder"
            )
        busy = self.folder.is_dir() and any(self.folder.iterdir())
        if busy and not (resume or overwrite):
            raise MarineLifeError(
                "already holds files; not replacing them",
                path=self.folder,
                fix="pass --resume to continue these results, --overwrite to replace them, "
                "or choose another --out folder",
            )
        if resume and self.results.is_file() and self.ext == "csv":
            header = csv_columns_of(self.results)
            if header is not None and header != self.columns:
                raise MarineLifeError(
                    "was written with other options (its columns differ), so it cannot be "
                    "continued",
                    path=self.results,
                    fix="resume with the same --top-k and --format, or choose another --out",
                )

    def start(self, shard: Shard, *, resume: bool) -> None:
        """Rank 0 prepares the folder (folding in old parts and repairing the results file on
        resume); then every rank knows the paths already done."""
        if shard.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            if resume:
                self._fold_in_old_parts()
                self._read_done(repair=True)
            elif self.results.exists():
                self.results.unlink()  # --overwrite: the new results replace the old
            shutil.rmtree(self.folder / PARTS, ignore_errors=True)
        shard.barrier()  # the other ranks read only once rank 0 has repaired the file
        if resume and not shard.main:
            self._read_done(repair=False)

    def _read_done(self, *, repair: bool) -> None:
        if self.results.is_file():
            for rec in read_records(self.results, repair=repair):
                self.done.add(rec.get("path", ""))
                self.records += 1

    def _fold_in_old_parts(self) -> None:
        parts = sorted((self.folder / PARTS).glob(f"rank*.{self.ext}"))
        if not parts:
            return
        kept = (
            sum(1 for _ in read_records(self.results, repair=True)) if self.results.is_file() else 0
        )
        stream, writer = self.append_writer(kept)
        with stream:
            for part in parts:
                writer.write(list(read_records(part)))
            writer.close()

    # ----------------------------------------------------------------- writing
    def open_writer(self, shard: Shard) -> tuple[TextIO, CsvWriter | JsonWriter]:
        """This process's results stream: the results file itself (appended to on resume), or
        its part file under torchrun."""
        if shard.distributed:
            path = self.part(shard.rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - caller closes
            return stream, self._writer(stream, fresh=True, records=0)
        return self.append_writer(self.records)

    def append_writer(self, records: int) -> tuple[TextIO, CsvWriter | JsonWriter]:
        fresh = not self.results.is_file() or self.results.stat().st_size == 0
        mode = "w" if fresh else "a"
        stream = open(self.results, mode, encoding="utf-8", newline="")  # noqa: SIM115 - caller closes
        return stream, self._writer(stream, fresh=fresh, records=records)

    def _writer(self, stream: TextIO, *, fresh: bool, records: int) -> CsvWriter | JsonWriter:
        if self.ext == "json":
            return JsonWriter(stream, continuing=not fresh, records=records)
        return CsvWriter(stream, self.columns, header=fresh)

    def merge_parts(self, shard: Shard) -> None:
        """Rank 0, after every rank has finished: the parts, in input order, onto the results."""
        if not shard.distributed or not shard.main:
            return
        parts = [self.part(rank) for rank in range(shard.world)]
        stream, writer = self.append_writer(self.records)
        with stream:
            streams = [read_records(p) if p.is_file() else iter(()) for p in parts]
            batch: list[dict[str, Any]] = []
            for rec in interleave(streams):
                batch.append(rec)
                if len(batch) >= 256:
                    writer.write(batch)
                    batch = []
            writer.write(batch)
            writer.close()
        shutil.rmtree(self.folder / PARTS, ignore_errors=True)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every row of the finished results file."""
        return read_records(self.results) if self.results.is_file() else iter(())
