#!/usr/bin/env python3
"""Where the log store's writer spends its time during ``opsmcp logs load``.

Loads a JSON Lines file into a fresh store in a temporary directory with
``LogStore.load_files`` (the code behind ``opsmcp logs load``) and times every SQL
statement the writer thread runs (``write_batch``), summed by statement kind, next to the
load's wall time and the process's CPU time (writer and parse thread together). The
writer's statements run with the GIL released, so when ``writer`` is close to ``wall``
the writer is the bottleneck; when CPU is close to 2 x wall, both cores are busy.

Usage: python scripts/profile_logstore_writer.py FILE.jsonl [--batch-size 20000]
(e.g. ``DIR/logs.jsonl`` from ``python scripts/bench_logstore.py --lines 1000000 --ingest-only --dir DIR``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from opsmcp.backends.logstore import LogStore
from opsmcp.backends.logstore import ingest


def _kind(sql: str) -> str:
    """A statement's kind: its verb and table (``INSERT logs_fts``, ``COMMIT``, ...)."""
    words = sql.replace("(", " ").split()
    if not words:
        return "?"
    verb = words[0].upper()
    if verb == "INSERT" and len(words) > 2:
        return f"INSERT {words[2]}"
    if verb == "UPDATE" and len(words) > 1:
        return f"UPDATE {words[1]}"
    return verb


class TimedConnection:
    """A sqlite3 connection whose ``execute`` and ``executemany`` add their wall time to
    ``times[kind]``."""

    def __init__(self, conn: Any, times: dict[str, float]) -> None:
        self._conn, self._times = conn, times

    def _timed(self, run: Any, sql: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return run(sql, *args)
        finally:
            kind = _kind(sql)
            self._times[kind] = self._times.get(kind, 0.0) + time.perf_counter() - start

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(self._conn.execute, sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self._timed(self._conn.executemany, sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="a JSON Lines file to load")
    ap.add_argument("--batch-size", type=int, default=20_000, help="lines per transaction (default 20,000)")
    args = ap.parse_args()
    times: dict[str, float] = {}
    batches = 0
    write_batch = ingest.write_batch

    def timed(conn: Any, stage: Any) -> None:
        nonlocal batches
        batches += 1
        write_batch(TimedConnection(conn, times), stage)

    ingest.write_batch = timed  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(Path(tmp) / "store.db")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = store.load_files([args.file], batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    writer = sum(times.values())
    print(f"{report.loaded:,} lines in {wall:.2f} s = {report.loaded / wall:,.0f} lines/s; CPU {cpu:.2f} s "
          f"({cpu / wall:.2f} cores); writer statements {writer:.2f} s in {batches} batches")
    for kind, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:24s} {seconds:7.2f} s  {100 * seconds / wall:5.1f}% of wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
