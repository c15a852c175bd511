"""Loki as a :class:`~opsmcp.backends.logbackend.LogBackend` (its HTTP API over httpx, sync).

- ``search``: ``query_range`` (``direction=backward``) with the LogQL of :mod:`.logql`;
  pages continue by time (:mod:`~opsmcp.backends.timepage`). The total is one
  ``sum(count_over_time(...))`` instant query; with a full-text query the lines are read
  (at most :data:`COUNT_READ`) and each message is checked exactly, so the total is what
  the check kept (a lower bound when the read stopped).
- ``get_trace`` / ``error_lines``: a line filter on the id, ``| json`` and an exact label
  match, and an exact check of every line here (ids sharing segments never mix).
- ``stats``: ``sum by (level) (count_over_time(...))`` as a range query whose evaluation
  points end each bucket, plus instant queries for a partial first and last bucket, so the
  counts are of exactly [start, end].

Windows are bounded by ``OPSMCP_LOKI_MAX_WINDOW_HOURS`` (the newest part kept, said in the
notes). Bytes and lines Loki processed (its ``stats.summary``) are added to :attr:`usage`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, UTC
from typing import TYPE_CHECKING, Any

from opsmcp.backends import fulltext
from opsmcp.backends.jsonline import read_line
from opsmcp.backends.logbackend import (
    ERROR_LEVELS,
    Check,
    LogRecord,
    SearchPage,
    Stats,
    StatsGroup,
    TraceLines,
    errors_by_trace,
    levels_arg,
    most_first,
    ms_iso,
    ms_to_datetime,
    newest_window,
    normalize_level,
    to_ms,
    trace_candidates,
    trace_lines,
)
from opsmcp.backends.loki import logql as lq
from opsmcp.backends.loki.client import LokiClient
from opsmcp.backends.scancost import ScanUsage
from opsmcp.backends.timepage import TimeCursor, after, take
from opsmcp.errors import InvalidInput, NotFound, OpsError

if TYPE_CHECKING:
    from opsmcp.config import Settings

MAX_ENTRIES = 5_000  # Loki's default max_entries_limit_per_query
COUNT_READ = 10_000  # lines read to count a full-text search
MS = 1_000_000  # nanoseconds per millisecond
TRACE_IDS_PER_QUERY = 50

Row = tuple[int, str, LogRecord]


class LokiLogs:
    """Log lines in Loki, selected by ``selector`` (plus the service label).

    Args:
        client: the :class:`~.client.LokiClient`.
        selector: the LogQL stream selector every query starts from.
        service_label: the stream label naming the service.
        fields: JSON field names of the lines.
        max_window_ms: longest window one query reads.
    """

    name = "loki"

    def __init__(self, client: LokiClient, selector: str = '{service_name=~".+"}', service_label: str = "service_name",
                 fields: lq.Fields | None = None, max_window_ms: int = 168 * 3_600_000) -> None:
        lq.check_names(selector, service_label)
        self.client = client
        self.base = selector.strip()
        self.service_label = service_label
        self.fields = fields or lq.Fields()
        self.max_window_ms = max_window_ms
        self.usage = ScanUsage(self.name)

    @classmethod
    def from_settings(cls, settings: Settings) -> LokiLogs:
        """The backend ``OPSMCP_LOKI_*`` describe.

        Raises:
            OpsError: no URL, conflicting auth, or a malformed selector, label or field name.
        """
        return cls(LokiClient.from_settings(settings), settings.loki_selector, settings.loki_service_label,
                   lq.Fields.from_overrides(settings.loki_fields), round(settings.loki_max_window_hours * 3_600_000))

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    # ---------------------------------------------------------------- plumbing

    def _sel(self, service: str | None) -> str:
        return lq.selector(self.base, self.service_label, service)

    def _window(self, start_ms: int | None, end_ms: int | None, notes: list[str]) -> tuple[int, int]:
        return newest_window(start_ms, end_ms, self.max_window_ms, "OPSMCP_LOKI_MAX_WINDOW_HOURS", notes)

    def _get(self, path: str, what: str, params: dict[str, Any]) -> Any:
        data = self.client.request("GET", path, what, params=params)
        if not isinstance(data, dict) or data.get("status") not in (None, "success"):
            raise OpsError(f"Loki answered {what} without success: {str(data)[:200]}.", "see `opsmcp doctor`.")
        payload = data.get("data")
        summary = (payload or {}).get("stats", {}).get("summary", {}) if isinstance(payload, dict) else {}
        if summary or path.endswith(("query_range", "query")):
            self.usage.add(bytes_scanned=float(summary.get("totalBytesProcessed", 0) or 0),
                           records_scanned=float(summary.get("totalLinesProcessed", 0) or 0))
        return payload

    def _record(self, ts_ns: int, line: str, labels: dict[str, str], include_doc: bool) -> LogRecord:
        f = self.fields
        lf = read_line(line, level=f.level, message=f.message, trace_id=f.trace_id, event_id=f.event_id)
        return LogRecord(ts_ns // MS, labels.get(self.service_label) or "unknown", lf.level, lf.message, lf.trace_id,
                         lf.event_id, lf.doc if include_doc else None)

    def _lines(self, query: str, lo_ms: int, hi_ms: int, limit: int, *, forward: bool = False,
               include_doc: bool = False, what: str = "log query") -> list[Row]:
        """``query_range`` over [lo_ms, hi_ms] (``end`` is exclusive in Loki: one ns past),
        as (ns, id, record) rows, newest first (oldest first with ``forward``)."""
        payload = self._get("/loki/api/v1/query_range", what, {
            "query": query, "start": str(lo_ms * MS), "end": str((hi_ms + 1) * MS),
            "limit": str(min(limit, MAX_ENTRIES)), "direction": "forward" if forward else "backward"})
        if (payload or {}).get("resultType") not in (None, "streams"):
            raise OpsError(f"Loki answered a log query with {payload.get('resultType')!r}, not streams.")
        rows: list[Row] = []
        for stream in (payload or {}).get("result", []):
            labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
            key = hashlib.sha1(repr(sorted(labels.items())).encode(), usedforsecurity=False).hexdigest()[:8]
            for ts, line, *_ in stream.get("values", []):
                ns = int(ts)
                if lo_ms <= ns // MS <= hi_ms:
                    ident = key + hashlib.sha1(f"{ns}\0{line}".encode("utf-8", "replace"),
                                               usedforsecurity=False).hexdigest()[:16]
                    rows.append((ns, ident, self._record(ns, str(line), labels, include_doc)))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=not forward)
        return rows

    def _count(self, sel: str, stages: Sequence[str], lo_ms: int, hi_ms: int, by: str | None = None) -> dict[str, int]:
        """Lines in exactly [lo_ms, hi_ms] per ``by`` label (``""`` without one)."""
        query = lq.count_query(sel, stages, hi_ms - lo_ms + 1, by)
        payload = self._get("/loki/api/v1/query", "counting lines", {"query": query, "time": str((hi_ms + 1) * MS - 1)})
        out: dict[str, int] = {}
        for sample in (payload or {}).get("result", []):
            key = str((sample.get("metric") or {}).get(by, "")) if by else ""
            out[key] = out.get(key, 0) + int(float(sample.get("value", [0, "0"])[1]))
        return out

    # ---------------------------------------------------------------- search

    def search(
        self, query: str | None = None, service: str | None = None, level: str | Sequence[str] | None = None,
        trace_id: str | None = None, start: datetime | None = None, end: datetime | None = None, limit: int = 50,
        cursor: str | None = None, *, include_doc: bool = False,
    ) -> SearchPage:
        """See :meth:`LogBackend.search` (newest first; the cursor continues by time)."""
        tree = fulltext.parse(query, engine="Loki") if query else None
        levels = levels_arg(level)
        state = TimeCursor.decode(cursor, self.name) if cursor else None
        notes: list[str] = []
        lo, hi = self._window(to_ms(start) if start else None, to_ms(end) if end else None, notes)
        traces = [trace_id] if trace_id is not None else None
        sel = self._sel(service)
        stages = lq.pipeline(self.fields, tree=tree, levels=levels, trace_ids=traces)
        log_query = lq.log_query(sel, stages)

        def keep(rows: list[Row]) -> list[Row]:
            return [r for r in rows if (tree is None or fulltext.matches(tree, r[2].message))
                    and (trace_id is None or r[2].trace_id == trace_id)]

        if state is None and tree is not None:  # count by reading and checking (bounded)
            read = self._lines(log_query, lo, hi, COUNT_READ, include_doc=include_doc, what="search")
            rows = keep(read)
            total, exact = len(rows), len(read) < min(COUNT_READ, MAX_ENTRIES)
            if not exact:
                notes.append(f"counted the newest {len(read):,} lines that may match (Loki's answer limit); "
                             "the total is a lower bound: narrow the window for an exact count")
            hits, nxt = take(rows, limit, None, self.name, total, exact, more=not exact)
            return SearchPage(hits, total, exact, nxt, notes)
        if state is None:
            total, exact = sum(self._count(sel, stages, lo, hi).values()), True
        else:
            total, exact = state.total, state.exact
            hi = min(hi, state.t // MS)
        want = limit + 1 + (len(state.seen) if state else 0)
        read = self._lines(log_query, lo, hi, want, include_doc=include_doc, what="search")
        rows = after(keep(read), state)
        hits, nxt = take(rows, limit, state, self.name, total, exact, more=len(read) >= want)
        return SearchPage(hits, total, exact, nxt, notes)

    # ---------------------------------------------------------------- traces

    def _trace_rows(self, ids: Sequence[str], levels: list[str] | None, limit: int) -> list[Row]:
        lo, hi = self._window(None, None, [])
        rows: list[Row] = []
        for i in range(0, len(ids), TRACE_IDS_PER_QUERY):
            chunk = list(ids[i:i + TRACE_IDS_PER_QUERY])
            query = lq.log_query(self._sel(None), lq.pipeline(self.fields, levels=levels, trace_ids=chunk))
            rows += [r for r in self._lines(query, lo, hi, limit, forward=True, what="trace lookup")
                     if r[2].trace_id in chunk]
        rows.sort(key=lambda r: (r[0], r[1]))
        return rows

    def get_trace(self, trace_id: str, *, limit: int = 1000) -> TraceLines:
        """See :meth:`LogBackend.get_trace`: exact id only (also tried trimmed and lower-cased)."""
        size = min(max(limit + 1, 2_000), MAX_ENTRIES)
        tid, rows = trace_id, []
        for candidate in trace_candidates(trace_id):
            rows = self._trace_rows([candidate], None, size)
            if rows:
                tid = candidate
                break
        if not rows:
            raise NotFound(f"No log lines with trace_id {trace_id!r} in the last "
                           f"{self.max_window_ms / 3_600_000:g} h of {self.base}.",
                           "check the id (search_logs with a query finds ids in messages), or raise "
                           "OPSMCP_LOKI_MAX_WINDOW_HOURS for older traces.")
        return trace_lines(tid, [r[2] for r in rows], limit, size, [])

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """See :meth:`LogBackend.error_lines`: one query per :data:`TRACE_IDS_PER_QUERY` ids."""
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        rows = self._trace_rows(ids, list(ERROR_LEVELS), min(MAX_ENTRIES, per_trace * TRACE_IDS_PER_QUERY))
        return errors_by_trace((r for _, _, r in rows), per_trace)

    # ---------------------------------------------------------------- counts

    def stats(
        self, start: datetime, end: datetime, group_by: str = "level", interval_seconds: float = 300, *,
        service: str | None = None, level: str | Sequence[str] | None = None,
    ) -> Stats:
        """See :meth:`LogBackend.stats`: one range query for the whole buckets, one instant
        query per partial bucket at the window's edges."""
        if group_by not in ("level", "service"):
            raise InvalidInput(f"Cannot group by {group_by!r}.", "use group_by='level' or group_by='service'.")
        interval = round(interval_seconds * 1000)
        if interval <= 0:
            raise InvalidInput(f"interval must be positive, got {interval_seconds!r} s.", "use e.g. '5m' or 300.")
        notes: list[str] = []
        lo, hi = self._window(to_ms(start), to_ms(end), notes)
        first = lo // interval * interval
        nb = max(1, (hi // interval * interval - first) // interval + 1)
        by = lq.LEVEL if group_by == "level" else self.service_label
        sel = self._sel(service)
        stages = lq.pipeline(self.fields, levels=levels_arg(level), extract_level=group_by == "level")
        series: dict[str, list[int]] = {}

        def add(raw: str, i: int, n: int) -> None:
            key = normalize_level(raw) if group_by == "level" else (raw or "unknown")
            if n and 0 <= i < nb:
                series.setdefault(key, [0] * nb)[i] += n

        head = 0 if lo == first else 1  # whole buckets: [head, tail]
        tail = nb - 1 if hi == first + nb * interval - 1 else nb - 2
        for i in sorted({0, nb - 1} - set(range(head, tail + 1))):  # partial edge buckets, exactly
            b0, b1 = max(lo, first + i * interval), min(hi, first + (i + 1) * interval - 1)
            for key, n in self._count(sel, stages, b0, b1, by).items():
                add(key, i, n)
        if head <= tail:
            query = lq.count_query(sel, stages, interval, by)
            first_eval = first + (head + 1) * interval  # ms; the point ends bucket `head` (1 ns before)
            payload = self._get("/loki/api/v1/query_range", "counting lines", {
                "query": query, "start": str(first_eval * MS - 1), "end": str((first + (tail + 1) * interval) * MS - 1),
                "step": f"{interval / 1000:g}"})
            for s in (payload or {}).get("result", []):
                key = str((s.get("metric") or {}).get(by, ""))
                for ts, val in s.get("values", []):
                    i = head + round((float(ts) * 1000 - first_eval) / interval)
                    add(key, i, int(float(val)))
        groups = [StatsGroup(k, sum(v), v, None, None) for k, v in series.items() if any(v)]
        groups.sort(key=lambda g: (-g.total, g.key))
        if groups:
            notes.append("first_seen/last_seen are not available from Loki's metric queries")
        return Stats(lo, hi, interval, group_by, [first + i * interval for i in range(nb)], groups,
                     sum(g.total for g in groups), notes)

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """See :meth:`LogBackend.facets`: two counts over the newest window."""
        lo, hi = self._window(None, None, [])
        sel = self._sel(None)
        services = {k or "unknown": v for k, v in self._count(sel, [], lo, hi, self.service_label).items()}
        levels: dict[str, int] = {}
        for raw, n in self._count(sel, lq.pipeline(self.fields, extract_level=True), lo, hi, lq.LEVEL).items():
            levels[normalize_level(raw)] = levels.get(normalize_level(raw), 0) + n
        return most_first(services), most_first(levels)

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """See :meth:`LogBackend.time_bounds`: the newest and oldest line of the newest window
        (two one-line queries)."""
        lo, hi = self._window(None, None, [])
        query = self._sel(None)
        newest = self._lines(query, lo, hi, 1, what="finding the time range")
        if not newest:
            return None
        oldest = self._lines(query, lo, hi, 1, forward=True, what="finding the time range")
        return ms_to_datetime((oldest or newest)[0][0] // MS), ms_to_datetime(newest[0][0] // MS)

    # ---------------------------------------------------------------- doctor

    def check(self) -> list[Check]:
        """Reachable; authorised (labels); the service label has values; one query works."""
        checks: list[Check] = []
        try:
            self.client.request("GET", "/ready", "readiness", text=True)
            checks.append(Check("loki", True, f"reachable at {self.client.url}"))
        except OpsError as exc:
            return [Check("loki", False, str(exc))]
        now = to_ms(datetime.now(UTC))
        params = {"start": str((now - self.max_window_ms) * MS), "end": str(now * MS)}
        try:
            labels = self._get("/loki/api/v1/labels", "listing labels", params) or []
            values = self._get(f"/loki/api/v1/label/{self.service_label}/values", "listing services", params) or []
            if self.service_label in labels and values:
                checks.append(Check("loki labels", True, f"{self.service_label}: {len(values)} value(s), e.g. "
                                    + ", ".join(sorted(values)[:5])))
            else:
                hours = self.max_window_ms / 3_600_000
                checks.append(Check("loki labels", False, f"no stream has the label {self.service_label!r} in the "
                                    f"last {hours:g} h (labels: {', '.join(labels[:10]) or 'none'}): set "
                                    "OPSMCP_LOKI_SERVICE_LABEL, or load logs with `opsmcp logs load --to loki FILE`"))
        except OpsError as exc:
            checks.append(Check("loki labels", False, str(exc)))
        try:
            bounds = self.time_bounds()
            detail = (f"newest line at {ms_iso(to_ms(bounds[1]))}, oldest at {ms_iso(to_ms(bounds[0]))}" if bounds
                      else f"the query ran; no lines match {self.base} yet")
            checks.append(Check("loki query", True, detail))
        except OpsError as exc:
            checks.append(Check("loki query", False, str(exc)))
        return checks

