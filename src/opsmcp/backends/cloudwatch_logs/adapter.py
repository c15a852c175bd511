"""CloudWatch Logs as a :class:`~opsmcp.backends.logbackend.LogBackend` (boto3, sync).

Two ways to read, chosen by ``OPSMCP_CLOUDWATCH_QUERY``:

- ``insights`` (the default on AWS): Logs Insights queries (:mod:`.query`): StartQuery,
  GetQueryResults polled with a bounded wait, StopQuery when the wait, the byte cap
  (``OPSMCP_CLOUDWATCH_MAX_BYTES_SCANNED``) or a cancelled call ends it. Each answer's
  notes give the bytes and records scanned; ``/metrics`` adds them up (:attr:`usage`).
- ``filter`` (the default on any other endpoint: moto and LocalStack run only Insights'
  ``fields``/``sort``/``limit``): FilterLogEvents narrowed by a JSON filter pattern, read
  newest slice first and matched here, at most :data:`SCAN_CAP` events per call (said in
  the notes when reached).

Either way every line is read here (:func:`~opsmcp.backends.jsonline.read_line`) and
checked exactly against every filter (service, level, trace id, full text, window), so
ids that share UUID segments never mix and a wider engine match never leaks through.
Windows are bounded by ``OPSMCP_CLOUDWATCH_MAX_WINDOW_HOURS`` (the newest part is kept,
said in the notes). Every AWS call goes through :func:`~opsmcp.backends.aws.aws_call_sync`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, UTC
from typing import TYPE_CHECKING, Any

from opsmcp.backends import fulltext
from opsmcp.backends.aws import AwsClients, aws_call_sync
from opsmcp.backends.cloudwatch_logs import query as q
from opsmcp.backends.jsonline import read_line
from opsmcp.backends.logbackend import (
    COUNT_CAP,
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
from opsmcp.backends.scancost import ScanUsage, human_bytes
from opsmcp.backends.timepage import TimeCursor, after, take
from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError

if TYPE_CHECKING:
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp.cloudwatch_logs")
MAX_GROUPS = 50  # StartQuery takes at most 50 log groups
SCAN_CAP = 200_000  # events one filter-mode call reads at most
PAGE_EVENTS = 10_000  # FilterLogEvents' largest page
PREFETCH = 5_000  # rows a continued Insights search reads at once (later pages come from them)
GROUP_TTL = 60.0  # seconds the resolved group list is reused
TERMINAL = {"Complete", "Failed", "Cancelled", "Timeout", "Unknown"}


def parse_insights_time(value: str) -> int:
    """``2026-11-21 14:00:00.000`` (Insights' UTC format) or epoch ms → epoch ms.

    Raises:
        ValueError: neither.
    """
    if value.isdigit():
        return int(value)
    t = datetime.strptime(value.replace("T", " ").rstrip("Z")[:23], "%Y-%m-%d %H:%M:%S.%f" if "." in value
                          else "%Y-%m-%d %H:%M:%S")
    return to_ms(t.replace(tzinfo=UTC))


def query_mode(settings: Settings) -> str:
    """``insights`` or ``filter``: ``auto`` is insights on AWS's own endpoints only."""
    if settings.cloudwatch_query != "auto":
        return settings.cloudwatch_query
    url = settings.aws_endpoint_url or ""
    return "insights" if not url or ".amazonaws.com" in url else "filter"


class CloudWatchLogs:
    """Log lines in CloudWatch Logs groups.

    Args:
        clients: the boto3 clients (``logs`` is used).
        groups: log group names; a name ending in ``*`` is a prefix.
        mode: ``insights`` or ``filter`` (see the module docs).
        fields: JSON field names of the lines.
        max_window_ms: longest window one query reads.
        max_bytes: Insights bytes one call may scan before it is stopped.
        query_timeout: longest wait for one Insights query, seconds.
    """

    name = "cloudwatch"

    def __init__(self, clients: AwsClients, groups: Sequence[str], *, mode: str = "insights",
                 fields: q.Fields | None = None, max_window_ms: int = 24 * 3_600_000,
                 max_bytes: int = 5_000_000_000, query_timeout: float = 30.0) -> None:
        self.clients = clients
        self.patterns = list(groups)
        self.mode = mode
        self.fields = fields or q.Fields()
        self.max_window_ms = max_window_ms
        self.max_bytes = max_bytes
        self.query_timeout = query_timeout
        self.usage = ScanUsage(self.name)
        self._groups: tuple[float, list[str], list[str]] | None = None  # (when, groups, notes)
        self._lock = threading.Lock()
        self._cache: tuple[tuple[Any, ...], list[tuple[int, str, LogRecord]], bool] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudWatchLogs:
        """The backend ``OPSMCP_CLOUDWATCH_*`` describe.

        Raises:
            OpsError: no log groups configured, or a malformed field name.
        """
        if not settings.cloudwatch_log_groups:
            raise OpsError("OPSMCP_LOG_BACKEND=cloudwatch but OPSMCP_CLOUDWATCH_LOG_GROUPS is not set.",
                           "set the log groups to read, e.g. /aws/lambda/order-processor,/ecs/payments* "
                           "(a name ending in * is a prefix).")
        return cls(AwsClients(settings), settings.cloudwatch_log_groups, mode=query_mode(settings),
                   fields=q.Fields.from_overrides(settings.cloudwatch_fields),
                   max_window_ms=round(settings.cloudwatch_max_window_hours * 3_600_000),
                   max_bytes=settings.cloudwatch_max_bytes_scanned,
                   query_timeout=settings.cloudwatch_query_timeout_seconds)

    def close(self) -> None:
        """Nothing to release (boto3 clients close with the process)."""

    # ---------------------------------------------------------------- plumbing

    @property
    def logs(self) -> Any:
        """The shared boto3 ``logs`` client."""
        return self.clients.client("logs")

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        return aws_call_sync(self.clients, what, fn, **kwargs)

    def groups(self) -> tuple[list[str], list[str]]:
        """The configured groups resolved (prefixes listed), at most :data:`MAX_GROUPS`, and notes."""
        now = time.monotonic()
        cached = self._groups
        if cached is not None and now - cached[0] < GROUP_TTL:
            return cached[1], cached[2]
        out: list[str] = []
        notes: list[str] = []
        for pattern in self.patterns:
            if not pattern.endswith("*"):
                out.append(pattern)
                continue
            token = None
            for _ in range(10):
                kwargs: dict[str, Any] = {"logGroupNamePrefix": pattern[:-1], "limit": 50}
                if token:
                    kwargs["nextToken"] = token
                resp = self._call(f"list log groups {pattern}", self.logs.describe_log_groups, **kwargs)
                out += [g["logGroupName"] for g in resp.get("logGroups", [])]
                token = resp.get("nextToken")
                if not token or len(out) > MAX_GROUPS:
                    break
        out = list(dict.fromkeys(out))
        if len(out) > MAX_GROUPS:
            notes.append(f"{len(out)}+ log groups match OPSMCP_CLOUDWATCH_LOG_GROUPS; read the first {MAX_GROUPS} "
                         "(name order): narrow the prefixes")
            out = out[:MAX_GROUPS]
        self._groups = (now, out, notes)
        return out, notes

    def _window(self, start_ms: int | None, end_ms: int | None, notes: list[str]) -> tuple[int, int]:
        return newest_window(start_ms, end_ms, self.max_window_ms, "OPSMCP_CLOUDWATCH_MAX_WINDOW_HOURS", notes)

    def _record(self, ts_ms: int, raw: str, key: str, include_doc: bool) -> LogRecord:
        f = self.fields
        lf = read_line(raw, level=f.level, message=f.message, trace_id=f.trace_id, event_id=f.event_id,
                       service=f.service)
        return LogRecord(ts_ms, lf.service or "unknown", lf.level, lf.message, lf.trace_id, lf.event_id,
                         lf.doc if include_doc else None)

    # ---------------------------------------------------------------- Logs Insights

    def _insights(self, query: str, lo_ms: int, hi_ms: int, groups: list[str], what: str,
                  notes: list[str]) -> tuple[list[dict[str, str]], dict[str, float], bool]:
        """Run one Insights query over [lo_ms, hi_ms] (whole seconds around it); return
        (rows, statistics, complete). Stops the query on the byte cap (partial rows,
        complete=False), the time bound or a cancelled call.

        Raises:
            BackendUnavailable: no answer within the time bound, or the query failed.
        """
        resp = self._call(f"start a Logs Insights query ({what})", self.logs.start_query,
                          logGroupNames=groups, startTime=lo_ms // 1000, endTime=-(-hi_ms // 1000),
                          queryString=query)
        qid = resp["queryId"]
        deadline = time.monotonic() + self.query_timeout
        delay, stopped, complete = 0.05, False, False
        stats: dict[str, float] = {}
        rows: list[dict[str, str]] = []
        try:
            while True:
                out = self._call(f"read Logs Insights results ({what})", self.logs.get_query_results, queryId=qid)
                stats = out.get("statistics") or {}
                status = out.get("status", "Unknown")
                rows = [q.row(r) for r in out.get("results", [])]
                if status == "Complete":
                    complete = True
                    break
                if status in TERMINAL:
                    raise BackendUnavailable(f"The Logs Insights query ({what}) ended {status}.",
                                             "retry, or narrow the window (`opsmcp doctor` checks access).")
                if float(stats.get("bytesScanned", 0) or 0) > self.max_bytes:
                    stopped = True
                    self._stop(qid)
                    notes.append(f"stopped the query after {human_bytes(float(stats['bytesScanned']))} scanned "
                                 f"(OPSMCP_CLOUDWATCH_MAX_BYTES_SCANNED={human_bytes(self.max_bytes)}): results "
                                 "are partial; narrow the window, the groups or the filters")
                    break
                if time.monotonic() > deadline:
                    stopped = True
                    self._stop(qid)
                    raise BackendUnavailable(
                        f"The Logs Insights query ({what}) did not finish within {self.query_timeout:g} s; stopped it.",
                        "narrow the window or the log groups, or raise OPSMCP_CLOUDWATCH_QUERY_TIMEOUT_SECONDS.")
                _check_cancelled(lambda: self._stop(qid))
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        finally:
            self.usage.add(bytes_scanned=float(stats.get("bytesScanned", 0) or 0),
                           records_scanned=float(stats.get("recordsScanned", 0) or 0),
                           records_matched=float(stats.get("recordsMatched", 0) or 0), stopped=stopped)
        if stats:
            notes.append(f"Logs Insights scanned {human_bytes(float(stats.get('bytesScanned', 0) or 0))} "
                         f"({int(float(stats.get('recordsScanned', 0) or 0)):,} records) in {len(groups)} log group(s)")
        return rows, stats, complete

    def _stop(self, qid: str) -> None:
        with contextlib.suppress(OpsError):  # best effort: it also ends on its own
            self._call("stop a Logs Insights query", self.logs.stop_query, queryId=qid)

    def _insights_rows(self, query: str, lo: int, hi: int, groups: list[str], what: str, notes: list[str],
                       include_doc: bool) -> tuple[list[tuple[int, str, LogRecord]], dict[str, float], bool]:
        rows, stats, complete = self._insights(query, lo, hi, groups, what, notes)
        out = []
        for r in rows:
            try:
                ts = parse_insights_time(r.get("@timestamp", ""))
            except ValueError:
                continue
            if lo <= ts <= hi:
                out.append((ts, r.get("@ptr", ""), self._record(ts, r.get("@message", ""), r.get("@ptr", ""),
                                                                include_doc)))
        return out, stats, complete

    # ---------------------------------------------------------------- FilterLogEvents

    def _scan(self, groups: list[str], lo: int, hi: int, pattern: str, notes: list[str],
              cap: int = SCAN_CAP, sliced: bool = False) -> Iterator[list[tuple[int, str, str]]]:
        """Events of [lo, hi] as (ts, id, raw) batches, newest first within each, read with
        FilterLogEvents narrowed by ``pattern``; at most ``cap`` events. ``sliced``: in
        slices from the newest end (growing), for a caller that may stop early; else the
        window in one pass (fewest calls)."""
        span = max(60_000, (hi - lo) // 64) if sliced else hi - lo + 1
        top, read = hi, 0
        while top >= lo and read < cap:
            bottom = max(lo, top - span + 1)
            batch: list[tuple[int, str, str]] = []
            for group in groups:
                token = None
                while read < cap:
                    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": bottom, "endTime": top,
                                              "limit": min(PAGE_EVENTS, cap - read)}
                    if pattern:
                        kwargs["filterPattern"] = pattern
                    if token:
                        kwargs["nextToken"] = token
                    try:
                        resp = self._call(f"read log events of {group}", self.logs.filter_log_events, **kwargs)
                    except NotFound:
                        notes.append(f"log group {group} does not exist")
                        break
                    events = resp.get("events", [])
                    read += len(events)
                    batch += [(int(e["timestamp"]), f"{group}\0{e.get('eventId', '')}", str(e.get("message", "")))
                              for e in events]
                    token = resp.get("nextToken")
                    if not token:
                        break
            self.usage.add(records_scanned=len(batch))
            batch.sort(key=lambda e: (e[0], e[1]), reverse=True)
            yield batch
            top, span = bottom - 1, span * 2
        if read >= cap and top >= lo:
            notes.append(f"read the newest {cap:,} events of the window (the scan bound) down to {ms_iso(top + 1)}; "
                         "narrow the window or the filters for the rest")

    def _keep(self, rec: LogRecord, tree: fulltext.Tree | None, service: str | None, levels: list[str] | None,
              trace_ids: Sequence[str] | None) -> bool:
        return ((service is None or rec.service == service) and (not levels or rec.level in levels)
                and (not trace_ids or rec.trace_id in trace_ids)
                and (tree is None or fulltext.matches(tree, rec.message)))

    def _filtered(self, groups: list[str], lo: int, hi: int, notes: list[str], *, tree: fulltext.Tree | None,
                  service: str | None, levels: list[str] | None, trace_ids: Sequence[str] | None,
                  include_doc: bool, stop_after: int | None = None, cap: int = SCAN_CAP,
                  ) -> Iterator[tuple[int, str, LogRecord]]:
        pattern = q.json_pattern(self.fields, service=service, levels=levels, trace_ids=trace_ids)
        # a line that does not even hold a wanted id or the service as text is not parsed (moto and
        # LocalStack ignore JSON patterns; on AWS the pattern narrowed already); only for values
        # that JSON writes as they are
        wanted = [g for g in ([list(trace_ids)] if trace_ids else []) + ([[service]] if service is not None else [])
                  if all(json.dumps(v, ensure_ascii=False)[1:-1] == v for v in g)]
        found = 0
        for batch in self._scan(groups, lo, hi, pattern, notes, cap, sliced=stop_after is not None):
            for ts, key, raw in batch:
                if wanted and not all(any(v in raw for v in g) for g in wanted):
                    continue
                rec = self._record(ts, raw, key, include_doc)
                if self._keep(rec, tree, service, levels, trace_ids):
                    found += 1
                    yield ts, key, rec
            if stop_after is not None and found >= stop_after:
                return

    # ---------------------------------------------------------------- search

    def search(
        self, query: str | None = None, service: str | None = None, level: str | Sequence[str] | None = None,
        trace_id: str | None = None, start: datetime | None = None, end: datetime | None = None, limit: int = 50,
        cursor: str | None = None, *, include_doc: bool = False,
    ) -> SearchPage:
        """See :meth:`LogBackend.search` (newest first; the cursor continues by time)."""
        tree = fulltext.parse(query, engine="CloudWatch Logs") if query else None
        levels = levels_arg(level)
        state = TimeCursor.decode(cursor, self.name) if cursor else None
        groups, notes = self.groups()
        notes = list(notes)
        if not groups:
            return SearchPage([], 0, True, None, [*notes, f"no log group matches {', '.join(self.patterns)}"])
        lo, hi = self._window(to_ms(start) if start else None, to_ms(end) if end else None, notes)
        if state is not None:
            hi = min(hi, state.t)
        traces = [trace_id] if trace_id is not None else None
        if self.mode == "insights":
            rows, total, exact, more = self._insights_page(tree, service, levels, traces, lo, hi, limit, state,
                                                           groups, notes, include_doc)
        else:
            rows, total, exact, more = self._filter_page(tree, service, levels, traces, lo, hi, limit, state,
                                                         groups, notes, include_doc)
        hits, nxt = take(rows, limit, state, self.name, total, exact, more=more)
        return SearchPage(hits, total, exact, nxt, notes)

    def _insights_page(self, tree: fulltext.Tree | None, service: str | None, levels: list[str] | None,
                       traces: list[str] | None, lo: int, hi: int, limit: int, state: TimeCursor | None,
                       groups: list[str], notes: list[str], include_doc: bool,
                       ) -> tuple[list[tuple[int, str, LogRecord]], int, bool, bool]:
        key = (repr(tree), service, tuple(levels or ()), tuple(traces or ()), lo, tuple(groups), include_doc)
        want = limit + 1 + (len(state.seen) if state else 0)
        cached = self._cache
        if state is not None and cached is not None and cached[0] == key:
            rows = after([r for r in cached[1] if r[0] <= hi], state)
            if len(rows) > limit or cached[2]:
                return rows, state.total, state.exact, len(rows) > limit
        if state is not None:
            want = max(want, PREFETCH)
        query = q.search_query(self.fields, tree=tree, service=service, levels=levels, trace_ids=traces, limit=want)
        got, stats, complete = self._insights_rows(query, lo, hi, groups, "search", notes, include_doc)
        full = complete and len(got) < min(want, q.MAX_INSIGHTS_LIMIT)
        if state is not None:
            self._cache = (key, got, full)
            rows = after(got, state)
            return rows, state.total, state.exact, len(rows) > limit or not full
        matched = int(float(stats.get("recordsMatched", 0) or 0))
        total = max(matched, len(got)) if stats else len(got)
        exact = complete and (bool(stats) or full)
        return got, total, exact, len(got) > limit or not full

    def _filter_page(self, tree: fulltext.Tree | None, service: str | None, levels: list[str] | None,
                     traces: list[str] | None, lo: int, hi: int, limit: int, state: TimeCursor | None,
                     groups: list[str], notes: list[str], include_doc: bool,
                     ) -> tuple[list[tuple[int, str, LogRecord]], int, bool, bool]:
        if state is None:  # the first page counts every match (bounded), later ones stop at a page
            scan_notes: list[str] = []
            rows = list(self._filtered(groups, lo, hi, scan_notes, tree=tree, service=service, levels=levels,
                                       trace_ids=traces, include_doc=include_doc))
            notes += scan_notes
            return rows[: limit + 1], len(rows), not scan_notes, len(rows) > limit
        rows = after(list(self._filtered(groups, lo, hi, notes, tree=tree, service=service, levels=levels,
                                         trace_ids=traces, include_doc=include_doc,
                                         stop_after=limit + 1 + len(state.seen))), state)
        return rows, state.total, state.exact, len(rows) > limit

    # ---------------------------------------------------------------- traces

    def _trace_rows(self, trace_ids: list[str], levels: list[str] | None, limit: int,
                    notes: list[str]) -> list[tuple[int, str, LogRecord]]:
        groups, gnotes = self.groups()
        notes += gnotes
        if not groups:
            return []
        lo, hi = self._window(None, None, [])
        if self.mode == "insights":
            query = q.search_query(self.fields, trace_ids=trace_ids, levels=levels, limit=limit, oldest_first=True)
            rows, _, _ = self._insights_rows(query, lo, hi, groups, "trace lookup", notes, False)
        else:
            rows = []
            for chunk in q.trace_pattern_chunks(self.fields, trace_ids, levels):
                rows += self._filtered(groups, lo, hi, notes, tree=None, service=None, levels=levels,
                                       trace_ids=chunk, include_doc=False)
        rows = [r for r in rows if r[2].trace_id in trace_ids]
        rows.sort(key=lambda r: (r[0], r[1]))
        return rows

    def get_trace(self, trace_id: str, *, limit: int = 1000) -> TraceLines:
        """See :meth:`LogBackend.get_trace`: exact id only (also tried trimmed and lower-cased),
        over the newest ``OPSMCP_CLOUDWATCH_MAX_WINDOW_HOURS``."""
        notes: list[str] = []
        size = min(max(limit + 1, 2_000), COUNT_CAP)
        tid, rows = trace_id, []
        for candidate in trace_candidates(trace_id):
            rows = self._trace_rows([candidate], None, size, notes)
            if rows:
                tid = candidate
                break
        if not rows:
            hours = self.max_window_ms / 3_600_000
            raise NotFound(f"No log lines with trace_id {trace_id!r} in the last {hours:g} h of "
                           f"{', '.join(self.patterns)}.",
                           "check the id (search_logs with a query finds ids in messages), or raise "
                           "OPSMCP_CLOUDWATCH_MAX_WINDOW_HOURS for older traces.")
        return trace_lines(tid, [r[2] for r in rows], limit, size, notes)

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """See :meth:`LogBackend.error_lines`: one Insights query for all ids (insights), or
        FilterLogEvents with the ids in as few JSON patterns as fit (filter)."""
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        rows = self._trace_rows(ids, list(ERROR_LEVELS), min(q.MAX_INSIGHTS_LIMIT, per_trace * len(ids) * 4), [])
        return errors_by_trace((r for _, _, r in rows), per_trace)

    # ---------------------------------------------------------------- counts

    def stats(
        self, start: datetime, end: datetime, group_by: str = "level", interval_seconds: float = 300, *,
        service: str | None = None, level: str | Sequence[str] | None = None,
    ) -> Stats:
        """See :meth:`LogBackend.stats`: ``stats count(*) by bin(…), level`` (insights) or
        counted here over the scanned events (filter)."""
        if group_by not in ("level", "service"):
            raise InvalidInput(f"Cannot group by {group_by!r}.", "use group_by='level' or group_by='service'.")
        interval_ms = round(interval_seconds * 1000)
        if interval_ms <= 0:
            raise InvalidInput(f"interval must be positive, got {interval_seconds!r} s.", "use e.g. '5m' or 300.")
        notes: list[str] = []
        lo_ms, hi_ms = self._window(to_ms(start), to_ms(end), notes)
        first_bucket = lo_ms // interval_ms * interval_ms
        nb = max(1, (hi_ms // interval_ms * interval_ms - first_bucket) // interval_ms + 1)
        levels = levels_arg(level)
        series: dict[str, list[int]] = {}
        edges: dict[str, list[int]] = {}

        def add(key: str, ts: int, n: int, first: int, last: int) -> None:
            i = (ts - first_bucket) // interval_ms
            if 0 <= i < nb:
                series.setdefault(key, [0] * nb)[i] += n
                e = edges.get(key)
                edges[key] = [min(e[0], first), max(e[1], last)] if e else [first, last]

        groups, gnotes = self.groups()
        notes += gnotes
        if groups and self.mode == "insights":
            query = q.stats_query(self.fields, group_by=group_by, interval_ms=interval_ms, service=service,
                                  levels=levels)
            rows, _, _ = self._insights(query, lo_ms, hi_ms, groups, "counting lines", notes)
            for r in rows:
                try:
                    bucket, first, last = (parse_insights_time(r.get(k, "")) for k in ("bucket", "first", "last"))
                except ValueError:
                    continue
                raw = r.get("grp", "")
                key = (normalize_level(raw) if group_by == "level" else raw) or ("UNKNOWN" if group_by == "level"
                                                                             else "unknown")
                add(key, bucket, int(float(r.get("n", 0) or 0)), max(first, lo_ms), min(last, hi_ms))
        elif groups:
            for ts, _, rec in self._filtered(groups, lo_ms, hi_ms, notes, tree=None, service=service, levels=levels,
                                             trace_ids=None, include_doc=False):
                add(rec.level if group_by == "level" else rec.service, ts, 1, ts, ts)
        out = [StatsGroup(k, sum(v), v, *(edges.get(k) or (None, None))) for k, v in series.items() if any(v)]
        out.sort(key=lambda g: (-g.total, g.key))
        return Stats(lo_ms, hi_ms, interval_ms, group_by, [first_bucket + i * interval_ms for i in range(nb)], out,
                     sum(g.total for g in out), notes)

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """See :meth:`LogBackend.facets`, over the newest window (one Insights query, or the
        newest 20,000 events read)."""
        groups, _ = self.groups()
        if not groups:
            return {}, {}
        lo, hi = self._window(None, None, [])
        services: dict[str, int] = {}
        levels: dict[str, int] = {}
        if self.mode == "insights":
            rows, _, _ = self._insights(q.facets_query(self.fields), lo, hi, groups, "listing services and levels", [])
            for r in rows:
                n = int(float(r.get("n", 0) or 0))
                svc, lvl = r.get("svc") or "unknown", normalize_level(r.get("lvl", ""))
                services[svc] = services.get(svc, 0) + n
                levels[lvl] = levels.get(lvl, 0) + n
        else:
            for _, _, rec in self._filtered(groups, lo, hi, [], tree=None, service=None, levels=None, trace_ids=None,
                                            include_doc=False, cap=20_000):
                services[rec.service] = services.get(rec.service, 0) + 1
                levels[rec.level] = levels.get(rec.level, 0) + 1
        return most_first(services), most_first(levels)

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """See :meth:`LogBackend.time_bounds`: from the log streams' first and last event
        times (DescribeLogStreams, the 50 latest streams of each group; AWS updates the last
        event time within about an hour, so the newest bound can lag)."""
        groups, _ = self.groups()
        lo: int | None = None
        hi: int | None = None
        for group in groups:
            try:
                resp = self._call(f"list log streams of {group}", self.logs.describe_log_streams, logGroupName=group,
                                  orderBy="LastEventTime", descending=True, limit=50)
            except NotFound:
                continue
            for s in resp.get("logStreams", []):
                first, last = s.get("firstEventTimestamp"), s.get("lastEventTimestamp")
                if first is not None:
                    lo = int(first) if lo is None else min(lo, int(first))
                if last is not None:
                    hi = int(last) if hi is None else max(hi, int(last))
        if lo is None or hi is None:
            return None
        return ms_to_datetime(lo), ms_to_datetime(hi)

    # ---------------------------------------------------------------- doctor

    def check(self) -> list[Check]:
        """Reachable with these credentials; the groups exist; the query path works."""
        checks: list[Check] = []
        try:
            self._call("list log groups", self.logs.describe_log_groups, limit=1)
            checks.append(Check("cloudwatch logs", True, f"reachable at {self.clients.endpoint}; mode {self.mode}"))
        except OpsError as exc:
            return [Check("cloudwatch logs", False, str(exc))]
        self._groups = None
        try:
            groups, gnotes = self.groups()
            missing = []
            for g in groups:
                resp = self._call(f"describe log group {g}", self.logs.describe_log_groups, logGroupNamePrefix=g,
                                  limit=1)
                if not any(x.get("logGroupName") == g for x in resp.get("logGroups", [])):
                    missing.append(g)
        except OpsError as exc:
            return [*checks, Check("cloudwatch log groups", False, str(exc))]
        found = [g for g in groups if g not in missing]
        if found:
            checks.append(Check("cloudwatch log groups", True, f"{len(found)} group(s): " + ", ".join(found[:5])
                                + (" ..." if len(found) > 5 else "") + ("; " + "; ".join(gnotes) if gnotes else "")))
        if missing or not found:
            checks.append(Check("cloudwatch log groups", False, "not found: " + (", ".join(missing) or
                                ", ".join(self.patterns)) + ": check OPSMCP_CLOUDWATCH_LOG_GROUPS, or load logs with "
                                "`opsmcp logs load --to cloudwatch FILE`"))
        try:
            bounds = self.time_bounds()
            detail = (f"newest event at {ms_iso(to_ms(bounds[1]))}, oldest at {ms_iso(to_ms(bounds[0]))}" if bounds
                      else "no events yet")
            checks.append(Check("cloudwatch log streams", True, detail))
        except OpsError as exc:
            checks.append(Check("cloudwatch log streams", False, str(exc)))
        if self.mode == "insights" and found:
            notes: list[str] = []
            now = to_ms(datetime.now(UTC))
            try:
                self._insights("fields @timestamp | limit 1", now - 300_000, now, found[:MAX_GROUPS], "doctor", notes)
                checks.append(Check("cloudwatch logs insights", True, "a one-line query over 5 minutes ran"
                                    + (f" ({notes[-1]})" if notes else "")))
            except OpsError as exc:
                checks.append(Check("cloudwatch logs insights", False, f"{exc} (logs:StartQuery and "
                                    "logs:GetQueryResults are needed; or set OPSMCP_CLOUDWATCH_QUERY=filter)"))
        return checks


def _check_cancelled(on_cancel: Any) -> None:
    """Raise the host task's cancellation (after ``on_cancel()``) when the tool call running
    this worker thread was cancelled; nothing outside an anyio worker thread."""
    import anyio.from_thread

    try:
        anyio.from_thread.check_cancelled()
    except RuntimeError:  # not in an anyio worker thread (the CLI, a script)
        return
    except BaseException:
        on_cancel()
        raise
