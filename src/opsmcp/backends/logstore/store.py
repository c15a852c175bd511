"""The embedded log store's queries: :class:`LogStore`, the default :class:`LogBackend`.

Every query is one read transaction on a pooled connection (:class:`StoreFile`), bounded
in time. Searches are index range scans over the rowid (= time) layout of
:mod:`.schema`; counts come from the rollups (:mod:`.rollup`); full text is FTS5 built
by :mod:`.fts`. Loads go through :mod:`.ingest`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from opsmcp.backends.logbackend import (
    COUNT_CAP,
    ERROR_LEVELS,
    Check,
    LogRecord,
    SearchPage,
    Stats,
    StatsGroup,
    TraceLines,
    error_line,
    levels_arg,
    ms_iso,
    ms_to_datetime,
    to_ms,
    trace_candidates,
)
from opsmcp.backends.logstore.connection import StoreFile
from opsmcp.backends.logstore.fts import fts_query, tag_query
from opsmcp.backends.logstore.ingest import ByteCounter, Sources, ingest_into, load_files
from opsmcp.backends.logstore.parser import IngestReport
from opsmcp.backends.logstore.rollup import bucket_counts, exact_count
from opsmcp.backends.logstore.schema import MAX_TS_MS, SEQ_BITS, SEQ_MASK
from opsmcp.errors import InvalidInput, NotFound, OpsError


class LogStore(StoreFile):
    """The SQLite log store at ``path``: loads (:meth:`ingest`, :meth:`load_files`) and the
    :class:`~opsmcp.backends.logbackend.LogBackend` queries.

    Args:
        path: the store file (created by the first load; queries never create it).
        readonly: open read-only (``mode=ro``): queries only, loads are refused.
    """

    name = "embedded"

    # ---------------------------------------------------------------- loading

    # ---------------------------------------------------------------- loading

    def ingest(
        self,
        lines: Iterable[str],
        *,
        source: str = "-",
        batch_size: int = 20_000,
        on_progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Load JSON Lines (one document per string) and report what happened.

        Lines are parsed on a helper thread while the previous batch is written; each
        batch (``batch_size`` lines) is one transaction holding its lines, FTS entries and
        counts, so concurrent readers see whole batches. Bad lines (invalid JSON, not an
        object, no message, bad timestamp) are counted with their line numbers and never
        stop the load; blank lines are skipped and counted.

        Args:
            lines: the documents, one per item (a trailing newline is fine).
            source: the name used for bad-line reports (a file name, ``-`` for stdin).
            batch_size: lines per transaction.
            on_progress: called after each batch with the number of lines read so far.
        """
        return self._ingest([(source, lines)], batch_size=batch_size, on_progress=on_progress)

    def load_files(
        self, paths: Sequence[str | Path], *, show_progress: bool = False, batch_size: int = 20_000
    ) -> IngestReport:
        """Load JSON Lines files (``-`` = stdin) in one session; one report for all.

        Loads of files are resumable and idempotent: a file loaded before (known by a hash
        of its first 4 KiB) continues after the lines already stored, so a killed load run
        again, or the same file loaded twice, stores each line once (stdin always loads).
        With ``show_progress`` a rich progress bar (by bytes) is drawn on stderr.

        Raises:
            NotFound: a file does not exist (nothing is loaded).
        """
        return load_files(
            lambda sources, tick, counter, files: self._ingest(sources, batch_size=batch_size, on_progress=tick,
                                                               counter=counter, files=files),
            paths, show_progress=show_progress)

    def _ingest(
        self,
        sources: Sources,
        *,
        batch_size: int,
        on_progress: Callable[[int], None] | None,
        counter: ByteCounter | None = None,
        files: dict[str, Path] | None = None,
    ) -> IngestReport:
        """One load under the write lock, on a write connection of its own."""
        with self._write_lock:
            conn = self._open(write=True)
            try:
                return ingest_into(conn, sources, batch_size=batch_size, on_progress=on_progress, counter=counter,
                                   files=files)
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            finally:
                conn.close()

    def reset(self) -> None:
        """Delete every stored line (for re-seeding the sandbox); the file stays."""
        with self._write_lock:
            conn = self._open(write=True)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO logs_fts(logs_fts) VALUES('delete-all')")
                for table in ("logs", "rollup_1m", "rollup_15m", "facets", "loads"):
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

    # ---------------------------------------------------------------- facts

    def exists(self) -> bool:
        """True when the store file exists (it may still be empty)."""
        return self.path.exists()

    def _facet(self, kind: str) -> dict[str, int]:
        return dict(self._read(lambda c: c.execute(
            "SELECT value, n FROM facets WHERE kind=? AND n > 0 ORDER BY n DESC, value", (kind,)
        ).fetchall()))

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """Known services and known levels with their line counts (one snapshot)."""
        rows = self._read(lambda c: c.execute(
            "SELECT kind, value, n FROM facets WHERE n > 0 ORDER BY n DESC, value").fetchall())
        return ({v: n for k, v, n in rows if k == "service"}, {v: n for k, v, n in rows if k == "level"})

    def services(self) -> dict[str, int]:
        """Known services with their line counts, most lines first."""
        return self._facet("service")

    def levels(self) -> dict[str, int]:
        """Known levels with their line counts, most lines first."""
        return self._facet("level")

    def count(self) -> int:
        """All stored lines."""
        sql = "SELECT coalesce(sum(n), 0) FROM facets WHERE kind='level'"
        return int(self._read(lambda c: c.execute(sql).fetchone()[0]))

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """The first and last stored timestamps, or None when the store is empty."""
        lo, hi = self._bounds_ms()
        if lo is None or hi is None:
            return None
        return ms_to_datetime(lo), ms_to_datetime(hi)

    def _bounds_ms(self) -> tuple[int | None, int | None]:
        row = self._read(lambda c: (
            c.execute("SELECT min(id) FROM logs").fetchone()[0], c.execute("SELECT max(id) FROM logs").fetchone()[0]
        ))
        if row[0] is None:
            return None, None
        return row[0] >> SEQ_BITS, row[1] >> SEQ_BITS

    # ---------------------------------------------------------------- queries

    _COLS = "id, service, level, trace_id, event_id, message"

    @staticmethod
    def _records(rows: Iterable[Sequence[Any]], with_doc: bool) -> list[LogRecord]:
        """Rows ``(id, service, level, trace_id, event_id, message[, doc])`` as records whose
        cursor (the id in hex) continues a search after them."""
        shift, rec = SEQ_BITS, LogRecord
        if with_doc:
            return [rec(r[0] >> shift, r[1], r[2], r[5], r[3], r[4], r[6], f"{r[0]:x}", r[0]) for r in rows]
        return [rec(r[0] >> shift, r[1], r[2], r[5], r[3], r[4], None, f"{r[0]:x}", r[0]) for r in rows]

    def search(
        self,
        query: str | None = None,
        service: str | None = None,
        level: str | Sequence[str] | None = None,
        trace_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        include_doc: bool = False,
    ) -> SearchPage:
        """Lines matching every given filter, newest first.

        Args:
            query: FTS5 query over ``message`` (see :func:`fts_query`); None for no text filter.
            service: exact service name.
            level: exact level(s), normalised (``warning`` → ``WARN``).
            trace_id: exact trace id.
            start, end: inclusive time window (either may be None).
            limit: hits per page (at least 1).
            cursor: ``next_cursor`` of the previous page.
            include_doc: also return each line's original JSON.

        Returns:
            A page; ``total`` counts all matches in the window (exact, except full-text
            counts stop at 10,000: then ``total_exact`` is False).

        Raises:
            InvalidInput: malformed full-text query or cursor.
        """
        lo = to_ms(start) << SEQ_BITS if start else 0
        hi = (to_ms(end) << SEQ_BITS) | SEQ_MASK if end else (MAX_TS_MS << SEQ_BITS) | SEQ_MASK
        count_hi = hi
        if cursor:
            try:
                before = int(cursor, 16)
                if not 0 < before < 1 << 63:  # a row id is a positive SQLite INTEGER
                    raise ValueError(cursor)
            except ValueError:
                raise InvalidInput(f"Cannot read cursor {cursor[:60]!r}.",
                                   "pass next_cursor from the previous result unchanged.") from None
            hi = min(hi, before - 1)
        levels = levels_arg(level)
        limit = max(1, int(limit))
        match = fts_query(query.strip()) if query and query.strip() else None
        with_doc = include_doc
        cols = self._COLS + (", doc" if with_doc else "")

        def run(c: sqlite3.Connection) -> SearchPage:
            filters, params = [], []
            if service is not None:
                filters.append("service = ?")
                params.append(service)
            if levels:
                filters.append(f"level IN ({','.join('?' * len(levels))})")
                params += levels
            if trace_id is not None:  # a trace is small: fetch it, then page in Python
                sql = f"SELECT {cols} FROM logs WHERE trace_id = ? AND id BETWEEN ? AND ?"
                args: list[Any] = [trace_id, lo, count_hi]
                for f in filters:
                    sql += " AND " + f
                args += params
                if match:
                    sql += " AND EXISTS (SELECT 1 FROM logs_fts WHERE logs_fts MATCH ? AND rowid = logs.id)"
                    args.append(f"message : ({match})")
                rows = c.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, COUNT_CAP + 1]).fetchall()
                total, exact = min(len(rows), COUNT_CAP), len(rows) <= COUNT_CAP
                rows = [r for r in rows if r[0] <= hi]
                hits, more = rows[:limit], len(rows) > limit
                return SearchPage(self._records(hits, with_doc), total, exact, f"{hits[-1][0]:x}" if more else None)
            if match:
                # Service and level filters are tag terms in the same FTS query, so FTS5
                # intersects doclists instead of checking rows; range terms only when there
                # is a window, so FTS5 walks the doclists alone.
                full = f"message : ({match})" + tag_query(service, levels)

                def where(top: int | None) -> tuple[str, list[Any]]:
                    terms, targs = ["logs_fts MATCH ?"], [full]  # type: list[str], list[Any]
                    if start is not None:
                        terms.append("f.rowid >= ?")
                        targs.append(lo)
                    if top is not None:
                        terms.append("f.rowid <= ?")
                        targs.append(top)
                    return " AND ".join(terms), targs

                lcols = ", ".join("l." + x.strip() for x in cols.split(","))
                hit_where, hit_args = where(hi if (end is not None or cursor) else None)
                rows = c.execute(
                    f"SELECT {lcols} FROM logs_fts f CROSS JOIN logs l ON l.id = f.rowid WHERE {hit_where} "
                    "ORDER BY f.rowid DESC LIMIT ?", [*hit_args, limit + 1]
                ).fetchall()
                count_where, count_args = where(count_hi if end is not None else None)
                total = c.execute(f"SELECT count(*) FROM (SELECT 1 FROM logs_fts f WHERE {count_where} LIMIT ?)",
                                  [*count_args, COUNT_CAP + 1]).fetchone()[0]
                exact = total <= COUNT_CAP
                total = min(total, COUNT_CAP)
            else:
                rows = self._filtered(c, service, levels, lo, hi, limit + 1, cols)
                total = exact_count(c, service, levels, lo >> SEQ_BITS, count_hi >> SEQ_BITS)
                exact = True
            hits, more = rows[:limit], len(rows) > limit
            return SearchPage(self._records(hits, with_doc), total, exact, f"{hits[-1][0]:x}" if more else None)

        return self._read(run, fts=query)

    def _filtered(
        self, c: sqlite3.Connection, service: str | None, levels: list[str] | None, lo: int, hi: int, k: int, cols: str
    ) -> list[Any]:
        """Newest ``k`` rows by service/levels in [lo, hi] (rowids), via index range scans."""
        if service is None and not levels:
            sql = f"SELECT {cols} FROM logs WHERE id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?"
            return c.execute(sql, (lo, hi, k)).fetchall()
        if service is not None and not levels:
            levels = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
        rows: list[Any] = []
        for lv in levels or []:
            if service is not None:
                sql = (f"SELECT {cols} FROM logs INDEXED BY logs_service_level WHERE service=? AND level=? "
                       "AND id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?")
                rows += c.execute(sql, (service, lv, lo, hi, k)).fetchall()
            else:
                sql = (f"SELECT {cols} FROM logs INDEXED BY logs_level WHERE level=? AND id BETWEEN ? AND ? "
                       "ORDER BY id DESC LIMIT ?")
                rows += c.execute(sql, (lv, lo, hi, k)).fetchall()
        if len(levels or []) > 1:
            rows.sort(key=lambda r: r[0], reverse=True)
        return rows[:k]

    def get_trace(self, trace_id: str, *, limit: int = 1000, include_doc: bool = False) -> TraceLines:
        """Every line of one trace (exact id), oldest first, at most ``limit``.

        Raises:
            NotFound: no line has this trace id; the hint lists ids sharing its first
                8 characters, if any.
        """
        cols = self._COLS + (", doc" if include_doc else "")

        def run(c: sqlite3.Connection) -> TraceLines | None:
            by_trace = f"SELECT {cols} FROM logs WHERE trace_id = ? ORDER BY id LIMIT ?"
            rows: list[Any] = []
            for tid in trace_candidates(trace_id):
                rows = c.execute(by_trace, (tid, limit + 1)).fetchall()
                if rows:
                    break
            if not rows:
                return None
            recs = self._records(rows[:limit], include_doc)
            if len(rows) <= limit:  # the whole trace is here: derive the rest from it
                services = list(dict.fromkeys(r.service for r in recs))
                err = next((r for r in recs if r.level in ERROR_LEVELS), None)
                return TraceLines(tid, recs, len(recs), services, err)
            count = c.execute("SELECT count(*) FROM logs WHERE trace_id = ?", (tid,)).fetchone()[0]
            services = [r[0] for r in c.execute(
                "SELECT service, min(id) FROM logs WHERE trace_id = ? GROUP BY service ORDER BY 2", (tid,))]
            lv = ",".join("?" * len(ERROR_LEVELS))
            first = c.execute(
                f"SELECT {cols} FROM logs WHERE trace_id = ? AND level IN ({lv}) ORDER BY id LIMIT 1",
                (tid, *ERROR_LEVELS),
            ).fetchall()
            return TraceLines(tid, recs, count, services, self._records(first, include_doc)[0] if first else None)

        found = self._read(run)
        if found is None:
            prefix = trace_id.strip()[:8]
            near = []
            if len(prefix) == 8:
                near = [r[0] for r in self._read(lambda c: c.execute(
                    "SELECT DISTINCT trace_id FROM logs WHERE trace_id >= ? AND trace_id < ? LIMIT 5",
                    (prefix, prefix + "\U0010ffff")).fetchall())]
            hint = ("traces with the same prefix: " + ", ".join(near)) if near else \
                "check the id; search_logs with a query finds trace ids in messages."
            raise NotFound(f"No log lines with trace_id {trace_id!r}.", hint)
        return found

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """For each trace id, its ERROR/CRITICAL/FATAL lines oldest first (at most
        ``per_trace``), in one query: ``{trace_id: [{"timestamp", "service", "level",
        "message", "event_id"}]}``. Traces without errors (or unknown) are absent."""
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        lv = ",".join("?" * len(ERROR_LEVELS))
        sql = (f"SELECT trace_id, id, service, level, message, event_id FROM ("
               f" SELECT l.trace_id, l.id, l.service, l.level, l.message, l.event_id,"
               f"  row_number() OVER (PARTITION BY l.trace_id ORDER BY l.id) AS k"
               f" FROM json_each(?) j CROSS JOIN logs l INDEXED BY logs_trace ON l.trace_id = j.value"
               f" WHERE l.level IN ({lv})) WHERE k <= ? ORDER BY trace_id, id")
        rows = self._read(lambda c: c.execute(sql, (json.dumps(ids), *ERROR_LEVELS, per_trace)).fetchall())
        out: dict[str, list[dict[str, Any]]] = {}
        for tid, rid, service, level, message, event in rows:
            out.setdefault(tid, []).append(error_line(rid >> SEQ_BITS, service, level, message, event))
        return out

    def check(self) -> list[Check]:
        """The doctor's view: the file exists, is a log store, and answers a query."""
        label = "log store"
        if not self.path.exists():
            return [Check(label, True, f"{self.path} does not exist yet: `opsmcp logs load FILE` creates it "
                                       "(the log tools answer with that hint until then)", warning=True)]
        try:
            n = self.count()
            bounds = self.time_bounds()
        except OpsError as exc:
            return [Check(label, False, str(exc))]
        span = f", {ms_iso(to_ms(bounds[0]))} to {ms_iso(to_ms(bounds[1]))}" if bounds else ""
        return [Check(label, True, f"embedded SQLite store {self.path}: {n:,} lines{span}")]

    def stats(
        self,
        start: datetime,
        end: datetime,
        group_by: str = "level",
        interval_seconds: float = 300,
        *,
        service: str | None = None,
        level: str | Sequence[str] | None = None,
    ) -> Stats:
        """Line counts per group (``level`` or ``service``) per time bucket in [start, end].

        Buckets are ``interval_seconds`` wide and aligned to the epoch (5-minute buckets
        start at :00, :05, ...); the first and last are clipped to the window.
        Whole minutes come from the rollup tables, so the cost does not grow with the
        number of lines.

        Raises:
            InvalidInput: unknown ``group_by`` or a non-positive interval.
        """
        if group_by not in ("level", "service"):
            raise InvalidInput(f"Cannot group by {group_by!r}.", "use group_by='level' or group_by='service'.")
        interval_ms = round(interval_seconds * 1000)
        if interval_ms <= 0:
            raise InvalidInput(f"interval must be positive, got {interval_seconds!r} s.", "use e.g. '5m' or 300.")
        lo_ms, hi_ms = to_ms(start), to_ms(end)
        levels = levels_arg(level)
        first_bucket = lo_ms // interval_ms * interval_ms
        nb = max(1, (hi_ms // interval_ms * interval_ms - first_bucket) // interval_ms + 1)

        def run(c: sqlite3.Connection) -> Stats:
            series: dict[str, list[int]] = {}
            for bucket, key, n in bucket_counts(c, lo_ms, hi_ms, interval_ms, group_by, service, levels):
                vals = series.get(key)
                if vals is None:
                    vals = series[key] = [0] * nb
                vals[(bucket - first_bucket) // interval_ms] += n
            spans = {}
            for key, vals in series.items():
                if any(vals):
                    f = next(i for i, v in enumerate(vals) if v)
                    last = max(i for i, v in enumerate(vals) if v)
                    spans[key] = (max(lo_ms, first_bucket + f * interval_ms),
                                  min(hi_ms, first_bucket + (f + 1) * interval_ms - 1),
                                  max(lo_ms, first_bucket + last * interval_ms),
                                  min(hi_ms, first_bucket + (last + 1) * interval_ms - 1))
            edges = self._edges(c, group_by, spans, service, levels)
            groups = [StatsGroup(key, sum(series[key]), series[key], *edges.get(key, (None, None))) for key in spans]
            groups.sort(key=lambda g: (-g.total, g.key))
            return Stats(lo_ms, hi_ms, interval_ms, group_by,
                         [first_bucket + i * interval_ms for i in range(nb)], groups, sum(g.total for g in groups))

        return self._read(run)

    @staticmethod
    def _edges(c: sqlite3.Connection, group_by: str, spans: dict[str, tuple[int, int, int, int]],
               service: str | None, levels: list[str] | None) -> dict[str, tuple[int | None, int | None]]:
        """First and last timestamp of each group, given the buckets they fall in: one
        statement of index seeks (per group and level, min in the first bucket, max in the last)."""
        if not spans:
            return {}
        all_levels = levels or [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
        with_service = group_by == "service" or service is not None
        rows: list[Any] = []
        for key, (fa, fb, la, lb) in spans.items():
            svc = key if group_by == "service" else service
            for lv in ([key] if group_by == "level" else all_levels):
                rows += [key, svc, lv, fa << SEQ_BITS, (fb << SEQ_BITS) | SEQ_MASK,
                         la << SEQ_BITS, (lb << SEQ_BITS) | SEQ_MASK]
        if with_service:
            src, cond = "logs INDEXED BY logs_service_level", "service = v.svc AND level = v.lvl"
        else:
            src, cond = "logs INDEXED BY logs_level", "level = v.lvl"
        values = ",".join(["(?,?,?,?,?,?,?)"] * (len(rows) // 7))
        sql = (f"WITH v(k, svc, lvl, fa, fb, la, lb) AS (VALUES {values}) "
               f"SELECT k, min((SELECT min(id) FROM {src} WHERE {cond} AND id BETWEEN v.fa AND v.fb)), "
               f"max((SELECT max(id) FROM {src} WHERE {cond} AND id BETWEEN v.la AND v.lb)) FROM v GROUP BY k")
        return {k: (f >> SEQ_BITS if f is not None else None, m >> SEQ_BITS if m is not None else None)
                for k, f, m in c.execute(sql, rows)}

