"""Staging a batch: JSON Lines text in, a serialized SQLite table of rows out.

:func:`stage_batch` is the CPU-bound half of a load (JSON parsing, field mapping, rollup
arithmetic, binding rows into a private in-memory database). It has no state and takes
and returns plain picklable values, so :mod:`.ingest` runs it on its parse thread for
small loads and in a pool of worker processes for big ones (where parsing, not SQLite,
limits the speed). The single writer then ATTACHes the bytes (``deserialize``) and copies
them into the store with set-based SQL.
"""

from __future__ import annotations

import pickle
import sqlite3
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from opsmcp.backends.logstore.parser import BadLine, IngestReport, parse_batch
from opsmcp.backends.logstore.rollup import rollup_rows
from opsmcp.backends.logstore.schema import STAGE_TABLE


@dataclass
class StagedBatch:
    """One parsed batch, ready for the writer.

    ``data`` is a serialized SQLite database with one table ``batch`` (the ``logs`` rows;
    None when the batch had no good line); ``minutes``, ``slots`` and ``facets`` are its
    rollup and facet upserts (see :func:`~opsmcp.backends.logstore.rollup.rollup_rows`);
    ``bad``/``blank`` count the lines not loaded, ``bad_lines`` lists the first 50 bad ones.
    """

    rows: int
    data: bytes | None
    minutes: list[tuple[Any, ...]] = field(default_factory=list)
    slots: list[tuple[Any, ...]] = field(default_factory=list)
    facets: list[tuple[Any, ...]] = field(default_factory=list)
    bad: int = 0
    blank: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)

    def merge_into(self, report: IngestReport) -> None:
        """Add this batch's bad and blank line counts (and listed bad lines) to ``report``."""
        report.bad += self.bad
        report.blank += self.blank
        room = 50 - len(report.bad_lines)
        if room > 0:
            report.bad_lines.extend(self.bad_lines[:room])


def stage_batch(lines: list[str], first_no: int, seq: int, source: str, yield_every: int = 0) -> StagedBatch:
    """Parse ``lines`` (numbered from ``first_no``; ids from sequence number ``seq`` on)
    into a :class:`StagedBatch`. Never raises for bad input: bad lines are counted.

    ``yield_every`` > 0 releases the GIL every that many lines (on a thread beside the
    writer; see :func:`~opsmcp.backends.logstore.parser.parse_batch`)."""
    report = IngestReport()
    counts: dict[tuple[int, str, str], int] = {}
    rows = parse_batch(list(enumerate(lines, first_no)), seq, source, report, counts, yield_every=yield_every)
    data = None
    if rows:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            conn.execute(STAGE_TABLE)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO batch VALUES (?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            data = conn.serialize()
        finally:
            conn.close()
    minutes, slots, facets = rollup_rows(counts)
    return StagedBatch(len(rows), data, minutes, slots, facets, report.bad, report.blank, report.bad_lines)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker loop of :class:`~opsmcp.backends.logstore.processes.StagerProcesses`:
    pickled ``stage_batch`` arguments in, ``("ok", StagedBatch)`` or ``("error", text)``
    out, until end of input."""
    while True:
        try:
            args = pickle.load(inp)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", stage_batch(*args))
        except Exception as exc:  # reported to the loader, which stops the load
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

