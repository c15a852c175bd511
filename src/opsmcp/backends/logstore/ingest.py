"""Ingest with progress: JSON Lines files into the store, batch by batch.

A parse thread runs :func:`~opsmcp.backends.logstore.parser.parse_batch` and fills a
private in-memory :class:`Stage` per batch while this thread copies the previous one into
the store with set-based SQL (lines, FTS entries, rollups and facets in one transaction),
so readers only ever see whole batches. :func:`load_files` adds the file handling and a
rich progress bar by bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import queue
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from opsmcp.backends.logstore.parser import IngestReport, parse_batch
from opsmcp.backends.logstore.rollup import rollup_rows
from opsmcp.backends.logstore.schema import SEQ_MASK, STAGE_TABLES, UPSERTS
from opsmcp.errors import NotFound, OpsError

Sources = Sequence[tuple[str, Iterable[str]]]
MARK = ("INSERT INTO loads(fingerprint, head_bytes, source, lines) VALUES (?,?,?,?) "
        "ON CONFLICT(fingerprint) DO UPDATE SET lines = excluded.lines, source = excluded.source")
HEAD_BYTES = 4096  # a file is known by a SHA-256 of its first 4 KiB (or all of it, when shorter)


def _head_hash(path: Path, size: int) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()


def resume_points(conn: sqlite3.Connection, files: dict[str, Path]) -> dict[str, tuple[str, int, int]]:
    """For each source name, ``(fingerprint, head bytes, lines already stored)``.

    A file matches an earlier load when its first ``head_bytes`` bytes hash to a stored
    fingerprint (so a file that grew since continues where it stopped); otherwise it gets
    a new fingerprint of its first :data:`HEAD_BYTES` bytes and starts at line 0.
    """
    heads = sorted({int(r[0]) for r in conn.execute("SELECT DISTINCT head_bytes FROM loads")}, reverse=True)
    out: dict[str, tuple[str, int, int]] = {}
    for name, path in files.items():
        size = path.stat().st_size
        found = None
        for head in (h for h in heads if h <= size):
            key = _head_hash(path, head)
            row = conn.execute("SELECT lines FROM loads WHERE fingerprint=?", (key,)).fetchone()
            if row is not None:
                found = (key, head, int(row[0]))
                break
        if found is None:
            head = min(size, HEAD_BYTES)
            found = (_head_hash(path, head), head, 0)
        out[name] = found
    return out


class Stage:
    """One parsed batch in a private in-memory database the writer ATTACHes and copies:
    its lines, and its rollup and facet rows (computed here, on the parse thread, so the
    writer copies them with one set-based statement each instead of a row-by-row
    ``executemany`` that contends for the GIL with the parser).

    Named shared-cache memory databases live while a connection holds them open; the
    parse thread fills one with its own connection and the writer closes it after use.
    """

    mark: tuple[str, int, str, int] | None = None  # (fingerprint, head bytes, source, lines done) of a file

    def __init__(self, rows: list[tuple[Any, ...]], counts: dict[tuple[int, str, str], int], read: int,
                 next_seq: int) -> None:
        self.uri = f"file:opsmcp-stage-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self.rows, self.read, self.next_seq = len(rows), read, next_seq
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.uri, uri=True, isolation_level=None, check_same_thread=False)
        for ddl in STAGE_TABLES:
            self._conn.execute(ddl)
        minutes, slots, facets = rollup_rows(counts)
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT INTO batch VALUES (?,?,?,?,?,?,?)", rows)
        self._conn.executemany("INSERT INTO minutes VALUES (?,?,?,?)", minutes)
        self._conn.executemany("INSERT INTO slots VALUES (?,?,?,?)", slots)
        self._conn.executemany("INSERT INTO facets VALUES (?,?,?)", facets)
        self._conn.execute("COMMIT")

    @classmethod
    def empty(cls, read: int, next_seq: int) -> Stage:
        stage = cls.__new__(cls)
        stage.uri, stage.rows, stage.read, stage.next_seq, stage._conn = "", 0, read, next_seq, None
        stage.mark = None
        return stage

    def close(self) -> None:
        """Drop the in-memory stage database."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None



class ByteCounter:
    """Opens the inputs of a load lazily and tells how many bytes were read so far.

    Files are read as UTF-8 text by the C text layer (no per-line Python work); bytes
    that are not UTF-8 become lone surrogates, which :func:`parse_batch` reports as a
    bad line instead of aborting the load.
    """

    def __init__(self) -> None:
        self._done = 0
        self._current: Any = None

    @property
    def bytes(self) -> int:
        """Bytes read so far over all inputs (a pipe counts only when finished)."""
        cur = self._current
        try:
            return self._done + (cur.buffer.tell() if cur is not None else 0)
        except (OSError, ValueError):  # a pipe (stdin) cannot tell
            return self._done

    def open(self, name: str) -> Iterator[str]:
        """The lines of file ``name`` (``-`` = stdin), counted as they are read."""
        if name == "-":
            fh = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="\n")
        else:
            fh = open(name, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 20)  # noqa: SIM115
        self._current = fh
        try:
            yield from fh
        finally:
            self._current = None
            with contextlib.suppress(OSError, ValueError):
                self._done += fh.buffer.tell()
            if name == "-":
                fh.detach()
            else:
                fh.close()


def ingest_into(
    conn: sqlite3.Connection,
    sources: Sources,
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
    counter: ByteCounter | None = None,
    files: dict[str, Path] | None = None,
) -> IngestReport:
    """Load ``(source name, lines)`` pairs through the write connection ``conn``.

    Sources named in ``files`` (regular files) are resumable: the lines a previous load of
    the same file stored are skipped, and each batch's transaction records how far this
    one got, so a load killed at any moment and run again stores every line exactly once.

    The parse thread turns each batch into rows, writes them into a private in-memory
    stage database (its own connection, so the row-by-row binding does not hold up the
    writer), and hands it over. This thread copies a stage into the store with
    set-based SQL (which runs without the GIL): lines, FTS entries, rollups and facets in
    one transaction per batch. ``on_progress`` gets the number of lines read after each
    batch. SQLite errors propagate (the caller maps them).
    """
    started = time.perf_counter()
    report = IngestReport(sources=[s for s, _ in sources])
    batch_size = max(1, int(batch_size))
    seq = int(conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
    resume = resume_points(conn, files or {})
    q: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        if isinstance(item, Stage):
            item.close()
        return False

    def produce() -> None:
        nonlocal seq
        read = 0
        try:
            for source, lines in sources:
                it = enumerate(lines, 1)
                point = resume.get(source)
                if point and point[2]:
                    skipped = sum(1 for _ in itertools.islice(it, point[2]))
                    report.skipped += skipped
                    read += skipped
                while True:
                    chunk = list(itertools.islice(it, batch_size))
                    if not chunk:
                        break
                    read += len(chunk)
                    last = chunk[-1][0]
                    counts: dict[tuple[int, str, str], int] = {}
                    rows = parse_batch(chunk, seq, source, report, counts, yield_every=256)
                    del chunk
                    seq += len(rows)
                    stage = Stage(rows, counts, read, seq) if rows else Stage.empty(read, seq)
                    if point:
                        stage.mark = (point[0], point[1], source, last)
                    del rows
                    if not put(stage):
                        return
            put(None)
        except BaseException as exc:
            put(exc)

    worker = threading.Thread(target=produce, name="logstore-parse", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            try:
                if item.rows:
                    write_batch(conn, item)
                    report.loaded += item.rows
                elif item.mark:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(MARK, item.mark)
                    conn.execute("COMMIT")
            finally:
                item.close()
            if on_progress is not None:
                on_progress(item.read)
    finally:
        stop.set()
        while True:  # release stages the writer will not take
            try:
                left = q.get_nowait()
            except queue.Empty:
                if not worker.is_alive():
                    break
                worker.join(0.05)
                continue
            if isinstance(left, Stage):
                left.close()
        worker.join()
    if report.loaded:
        conn.execute("PRAGMA analysis_limit=1000")  # approximate statistics: fast on big stores
        conn.execute("PRAGMA optimize")
        conn.execute("PRAGMA busy_timeout=200")  # shrink the WAL unless readers hold it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    report.seconds = time.perf_counter() - started
    if counter is not None:
        report.bytes_read = counter.bytes
    return report


def write_batch(conn: sqlite3.Connection, stage: Stage) -> None:
    """Copy one stage into the store in one transaction."""
    conn.execute("ATTACH ? AS stage", (stage.uri,))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            while True:
                try:
                    conn.execute(
                        "INSERT INTO logs(id, service, level, trace_id, event_id, message, doc) "
                        "SELECT id, service, level, trace_id, event_id, message, doc FROM stage.batch"
                    )
                    break
                except sqlite3.IntegrityError:
                    if not fix_id_clashes(conn):
                        raise
            conn.execute("INSERT INTO logs_fts(rowid, message, tags) "
                         "SELECT id, message, 's' || hex(service) || ' l' || hex(level) FROM stage.batch")
            for upsert in UPSERTS:  # rollups and facets, staged by the parse thread
                conn.execute(upsert)
            conn.execute("UPDATE meta SET value=? WHERE key='next_seq'", (stage.next_seq,))
            if stage.mark:
                conn.execute(MARK, stage.mark)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH stage")

def fix_id_clashes(conn: sqlite3.Connection) -> int:
    """Give batch rows whose id (same ms, same seq) is already stored a free seq;
    return how many there were."""
    clashes = [r[0] for r in conn.execute(
        "SELECT b.id FROM stage.batch b WHERE EXISTS (SELECT 1 FROM main.logs l WHERE l.id = b.id)"
    )]
    for old in clashes:
        base = old & ~SEQ_MASK
        for step in range(1, SEQ_MASK + 1):
            new = base | ((old + step * 7919) & SEQ_MASK)
            taken = conn.execute(
                "SELECT 1 FROM main.logs WHERE id=? UNION ALL SELECT 1 FROM stage.batch WHERE id=?", (new, new)
            ).fetchone()
            if not taken:
                conn.execute("UPDATE stage.batch SET id=? WHERE id=?", (new, old))
                break
        else:  # pragma: no cover - 2^20 lines in one millisecond
            raise OpsError("More than 1,048,576 log lines share one millisecond.", "split the load.")
    return len(clashes)


def load_files(
    run: Callable[[Sources, Callable[[int], None] | None, ByteCounter, dict[str, Path]], IngestReport],
    paths: Sequence[str | Path],
    *,
    show_progress: bool = False,
) -> IngestReport:
    """Open JSON Lines files (``-`` = stdin) lazily and ``run`` one ingest over all of them.

    With ``show_progress`` a rich progress bar (by bytes) is drawn on stderr.

    Raises:
        NotFound: a file does not exist (nothing is loaded).
    """
    names = [str(p) for p in paths]
    for name in names:
        if name != "-" and not Path(name).is_file():
            raise NotFound(f"No such log file: {name}.", "pass JSON Lines files, or - for stdin.")
    sizes = {name: (Path(name).stat().st_size if name != "-" else 0) for name in names}
    counter = ByteCounter()
    sources = [(name, counter.open(name)) for name in names]
    total = sum(sizes.values())
    files = {name: Path(name) for name in names if name != "-" and Path(name).is_file()}
    if not show_progress:
        return run(sources, None, counter, files)
    from rich.console import Console
    from rich.progress import (
        BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("loading logs"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[lines]:,} lines"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )
    with progress:
        task = progress.add_task("load", total=total or None, lines=0)

        def tick(lines_read: int) -> None:
            progress.update(task, completed=counter.bytes, lines=lines_read)

        report = run(sources, tick, counter, files)
        progress.update(task, completed=counter.bytes)
    return report
