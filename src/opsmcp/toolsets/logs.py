"""Logs toolset: search application logs, follow one trace, count lines over time.

Backed by any :class:`~opsmcp.backends.logbackend.LogBackend` (the embedded SQLite store
by default, OpenSearch with ``OPSMCP_LOG_BACKEND=opensearch``), read-only; the toolset
never knows which engine answers, and passes on the engine's ``notes`` where it answers
differently. Every result is bounded: hits
are capped by ``limit`` (clamped to 1-500, labelled in ``notes``) and by the result size
budget, with ``next_cursor`` to continue; messages are cut at 1,000 characters.
Unknown services or levels give an empty result whose notes list the known ones;
a malformed full-text query is a tool error with valid examples.

Besides the tools, :meth:`LogTools.error_lines` serves the DLQ analyzer with one query for
many trace ids.

Argument rules: every free-text argument has a length bound; a lone UTF-16 surrogate is
refused with a tool error; ``service=""``, ``level=""``, ``trace_id=""`` and ``query=""``
mean "no filter" (an empty exact filter can never match: the store files lines without a
service under ``unknown``), and the result's notes say so.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field

from opsmcp.backends.log_factory import build_log_backend
from opsmcp.backends.logbackend import LogBackend, LogRecord, ms_iso, normalize_level
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, OpsError, did_you_mean
from opsmcp.logsetup import backend_call_line, backends_log
from opsmcp.result_size import take_within
from opsmcp.results import OutsideText, clamp, untrusted
from opsmcp.times import iso, parse_duration, parse_time, parse_window, utcnow
from opsmcp.toolsets.base import tool

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_MESSAGE_CHARS = 1000
MAX_SPAN = timedelta(days=31)
DEFAULT_STATS_SPAN = timedelta(hours=6)
TARGET_BUCKETS = 40
MAX_BUCKETS = 240
MAX_GROUPS = 25
MAX_KNOWN_LISTED = 30
_NICE_SECONDS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

MAX_QUERY_CHARS = 1000
MAX_NAME_CHARS = 200
MAX_TIME_CHARS = 64
MAX_CURSOR_CHARS = 8192  # an OpenSearch cursor carries a point-in-time id
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- models


class LogHit(BaseModel):
    """One log line."""

    timestamp: str = Field(description="ISO-8601 UTC with milliseconds.")
    level: str
    service: str
    message: str = Field(description="The message (cut at 1,000 characters, marked when cut).")
    trace_id: str | None = None
    event_id: str | None = None
    fields: dict[str, Any] | None = Field(None, description="The line's other JSON fields (include_fields=true).")


class SearchLogsResult(OutsideText):
    """Result of search_logs."""

    untrusted: list[str] = untrusted("hits[]")

    total: int = Field(description="Matching lines in the window (see total_is_lower_bound).")
    total_is_lower_bound: bool = Field(False, description="True when full-text counting stopped at 10,000.")
    returned: int
    hits: list[LogHit] = Field(description="Newest first.")


class TraceResult(OutsideText):
    """Result of get_trace."""

    untrusted: list[str] = untrusted("services", "first_error", "lines[]")

    trace_id: str
    line_count: int = Field(description="All lines of the trace (lines may show fewer; see truncated).")
    services: list[str] = Field(description="Services in the order they first logged for this trace.")
    start: str = Field(description="Timestamp of the first line.")
    end: str = Field(description="Timestamp of the last line shown.")
    duration_ms: int = Field(description="end - start, in milliseconds.")
    first_error: LogHit | None = Field(description="The first ERROR/CRITICAL/FATAL line; null when none.")
    lines: list[LogHit] = Field(description="Oldest first.")


class StatsGroup(BaseModel):
    """Counts of one level or service per bucket."""

    key: str = Field(description="The level or service.")
    total: int
    counts: list[int] = Field(description="Lines per bucket, aligned with bucket_starts.")
    first_seen: str | None = Field(description="First line of this group in the window.")
    last_seen: str | None = Field(description="Last line of this group in the window.")
    peak_bucket: str | None = Field(description="Start of the bucket with the most lines.")
    rise_at: str | None = Field(
        description="Start of the first bucket whose count is >= 3 and >= 3x the median of the buckets before it "
                    "(an onset); null when there is none."
    )


class LogStatsResult(OutsideText):
    """Result of log_stats."""

    untrusted: list[str] = untrusted("groups[].key")

    group_by: str
    interval_seconds: float = Field(description="Bucket width actually used, in seconds.")
    start: str = Field(description="Window start used, ISO-8601 UTC.")
    end: str = Field(description="Window end used, ISO-8601 UTC.")
    bucket_starts: list[str] = Field(description=(
        "Start of each bucket (aligned to the interval; the first and last are clipped to the window)."))
    total: int = Field(description="Lines in the window (matching the filters).")
    groups: list[StatsGroup] = Field(description="Most lines first.")


class LogPattern(BaseModel):
    """One message template and how often it occurred."""

    template: str = Field(description="The message with variable parts masked (<NUM>, <UUID>, <HOST>, <*>).")
    status: Literal["new", "grew", "steady"] | None = Field(description=(
        "Against the baseline window: new (absent there), grew (>= 2x), steady; null without a baseline."))
    count: int = Field(description="Lines with this template in the window (estimated when the window was sampled).")
    baseline_count: int | None = Field(description="Estimated lines in the baseline window; null without one.")
    growth: float | None = Field(description="count / baseline_count; null when new or without a baseline.")
    first_seen: str | None = Field(description="First line of this template in the window (mined lines).")
    last_seen: str | None = Field(description="Last line of this template in the window (mined lines).")
    services: list[str] = Field(description="Services that logged it, most lines first (at most 5).")
    sample: str = Field(description="One line with this template (cut at 300 characters).")
    sample_trace_id: str | None = Field(description="The sample line's trace id, for get_trace.")


class LogPatternsResult(OutsideText):
    """Result of log_patterns."""

    untrusted: list[str] = untrusted("patterns[].template", "patterns[].sample", "patterns[].services")

    start: str = Field(description="Window start used, ISO-8601 UTC.")
    end: str = Field(description="Window end used, ISO-8601 UTC.")
    baseline_start: str | None = Field(description="Baseline window start; null when not compared.")
    baseline_end: str | None = Field(description="Baseline window end; null when not compared.")
    lines: int = Field(description="Lines in the window matching the filters.")
    lines_mined: int = Field(description="Lines clustered (fewer than lines when sampled; see notes).")
    baseline_lines: int | None = Field(description="Lines in the baseline window; null when not compared.")
    patterns: list[LogPattern] = Field(description="New first, then grew (largest growth first), then steady.")


# --------------------------------------------------------------------------- helpers


def _nice(seconds: float) -> int:
    return next((n for n in _NICE_SECONDS if n >= seconds), math.ceil(seconds / 86400) * 86400)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _known_note(kind: str, wanted: str, known: dict[str, int]) -> str:
    if not known:
        return f"unknown {kind} {wanted!r}: the log store is empty"
    shown = [f"{k} ({n:,})" for k, n in list(known.items())[:MAX_KNOWN_LISTED]]
    more = f" and {len(known) - MAX_KNOWN_LISTED} more" if len(known) > MAX_KNOWN_LISTED else ""
    mean = did_you_mean(normalize_level(wanted) if kind == "level" else wanted, known, 3)
    mean = f"; {mean}" if mean else ""
    return f"unknown {kind} {wanted!r}{mean} Known {kind}s (lines): {', '.join(shown)}{more}"


def _text_arg(name: str, value: str | None, notes: list[str], *, empty_means_absent: bool = True) -> str | None:
    """A free-text argument checked: a lone surrogate is refused; an empty string is absent.

    Raises:
        InvalidInput: the value holds an unpaired UTF-16 surrogate (no engine can store or
            match one; SQLite cannot even bind it).
    """
    if value is None:
        return None
    if _SURROGATE.search(value):
        raise InvalidInput(f"{name} holds an unpaired UTF-16 surrogate character, which no log line can contain.",
                           f"pass {name} as plain text (valid Unicode).")
    if empty_means_absent and not value.strip():
        notes.append(f"{name}={value!r} is empty: treated as no {name} filter")
        return None
    return value


def _hit(rec: LogRecord, include_fields: bool) -> tuple[LogHit, bool]:
    msg = rec.message
    cut = len(msg) > MAX_MESSAGE_CHARS
    if cut:
        msg = msg[:MAX_MESSAGE_CHARS] + f"… [+{len(rec.message) - MAX_MESSAGE_CHARS} chars]"
    return LogHit(timestamp=rec.timestamp, level=rec.level, service=rec.service, message=msg,
                  trace_id=rec.trace_id, event_id=rec.event_id,
                  fields=rec.fields() if include_fields else None), cut


def _size(rec: LogRecord, include_fields: bool) -> int:
    base = 110 + min(len(rec.message), MAX_MESSAGE_CHARS + 30) + len(rec.service) + len(rec.level)
    base += len(rec.trace_id or "") + len(rec.event_id or "")
    return base + (len(rec.doc or "") if include_fields else 0)


def _rise(counts: list[int], coverage: list[float]) -> int | None:
    """First bucket whose count is >= 3 and whose rate is >= 3x the median rate before it.

    Rates (count per second of the bucket inside the window) keep the clipped first
    and last buckets from looking like jumps.
    """
    rates = [c / max(w, 1e-9) for c, w in zip(counts, coverage, strict=True)]
    before: list[float] = []
    for i in range(1, len(counts)):
        bisect.insort(before, rates[i - 1])
        if counts[i] < 3:
            continue
        mid = len(before) // 2
        median = before[mid] if len(before) % 2 else (before[mid - 1] + before[mid]) / 2
        if rates[i] >= 3 * median:
            return i
    return None


# --------------------------------------------------------------------------- toolset


class LogTools:
    """The logs toolset over a log backend.

    Args:
        settings: ``log_backend`` and its settings, and ``max_result_bytes``.
        store: the backend to use (built by ``server.build_toolsets``; tests, the
            sandbox); default: :func:`~opsmcp.backends.log_factory.build_log_backend`.
    """

    def __init__(self, settings: Settings, store: LogBackend | None = None) -> None:
        self.settings = settings
        self._error: OpsError | None = None
        self._lazy = store is None and settings.log_backend == "embedded"
        if store is None and not self._lazy:
            try:
                store = build_log_backend(settings)
            except OpsError as exc:  # e.g. opensearch without a URL: the toolset is disabled with the reason
                self._error = exc
        self._store = store
        self._build_lock = threading.Lock()
        self.budget = int(settings.max_result_bytes * 0.85)

    @property
    def store(self) -> LogBackend:
        """The log backend. Raises the configuration error that kept it from being built.

        The embedded store is built on first use (opening it cannot fail until a query does),
        so ``tools/list`` never imports the SQLite store; OpenSearch is built at start-up,
        where a configuration error disables the toolset.
        """
        if self._lazy and self._store is None:
            with self._build_lock:
                if self._store is None:
                    self._store = build_log_backend(self.settings)
        if self._error is not None or self._store is None:
            raise self._error or OpsError("No log backend is configured.")
        return self._store

    def scan_totals(self) -> list[Any]:
        """What the backend has read so far (:class:`~opsmcp.backends.scancost.ScanTotals`), for
        ``/metrics``; empty for an engine that does not count (or is not built yet)."""
        usage = getattr(self._store, "usage", None)
        return [usage.snapshot()] if usage is not None else []

    def check(self) -> None:
        """Called by the server at start-up: raises why the backend could not be built."""
        if self._error is not None:
            raise self._error

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking step (which queries the log backend) in a worker thread; at DEBUG,
        log the step and its duration as a backend call."""
        if not backends_log.isEnabledFor(logging.DEBUG):
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
        started, outcome = time.perf_counter(), "ok"
        try:
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            backend_call_line(f"logs:{self.settings.log_backend}", getattr(fn, "__name__", "query").lstrip("_"),
                              time.perf_counter() - started, outcome)

    # ------------------------------------------------------------------ search_logs
    @tool(title="Search logs", read_only=True, idempotent=True, open_world=False)
    async def search_logs(
        self,
        query: Annotated[str | None, Field(max_length=MAX_QUERY_CHARS, description=(
            "Full-text, on the message: words (all must match), \"a phrase\", AND/OR/NOT in capitals, prefix*; "
            "e.g. 'timeout NOT retry'."))] = None,
        service: Annotated[str | None, Field(max_length=MAX_NAME_CHARS,
                                             description="Exact service name, e.g. 'order-processor'.")] = None,
        level: Annotated[str | None, Field(max_length=MAX_NAME_CHARS, description=(
            "DEBUG, INFO, WARN or ERROR (any case; WARNING = WARN), or several: 'WARN,ERROR'."))] = None,
        trace_id: Annotated[str | None, Field(max_length=MAX_NAME_CHARS,
                                              description="Exact trace id.")] = None,
        start: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "ISO-8601 or relative ('-15m', '-6h', '-2d'); default: the oldest line."))] = None,
        end: Annotated[str | None, Field(max_length=MAX_TIME_CHARS,
                                         description="Same forms as start; default: now.")] = None,
        limit: Annotated[int, Field(description=(
            "Most hits, 1-500."))] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Field(max_length=MAX_CURSOR_CHARS, description=(
            "next_cursor of the previous page."))] = None,
        include_fields: Annotated[bool, Field(description="Also each line's other JSON fields.")] = False,
    ) -> SearchLogsResult:
        """Search application logs, newest first: full-text `query` and exact filters; returns
        the hits and the total match count. log_stats: when errors began; get_trace: one
        request end to end."""
        return await self._run(self._search_logs, query, service, level, trace_id, start, end, limit, cursor,
                               include_fields)

    def _search_logs(self, query: str | None, service: str | None, level: str | None, trace_id: str | None,
                     start: str | None, end: str | None, limit: int, cursor: str | None,
                     include_fields: bool) -> SearchLogsResult:
        notes: list[str] = []
        query = _text_arg("query", query, notes)
        service = _text_arg("service", service, notes)
        level = _text_arg("level", level, notes)
        trace_id = _text_arg("trace_id", trace_id, notes)
        cursor = _text_arg("cursor", cursor, notes)
        limit = clamp("limit", limit, 1, MAX_LIMIT, notes)
        t0, t1 = None, None
        if start is not None or end is not None:
            now = utcnow()
            t_end = parse_time(end or "now", now=now, name="end")
            t0, t1, window_notes = parse_window(start or iso(t_end - MAX_SPAN), end, max_span=MAX_SPAN, now=now)
            if start is not None:
                notes += window_notes
        page = self.store.search(query, service, level, trace_id.strip() if trace_id else None,
                                 t0, t1, limit, cursor, include_doc=include_fields)
        notes += page.notes
        if not page.hits and self._unknown_filters(service, level, notes):
            return SearchLogsResult(total=0, returned=0, hits=[], notes=notes)
        next_cursor, truncated = page.next_cursor, page.next_cursor is not None
        kept, over = take_within(page.hits, self.budget, lambda r: _size(r, include_fields), used=300)
        if over and kept[-1].cursor:  # stop where a cursor continues; else the choke point's cut applies
            next_cursor, truncated = kept[-1].cursor, True
            notes.append(f"stopped at {len(kept)} hits to fit the {self.settings.max_result_bytes}-byte result "
                         "budget; pass next_cursor for more")
        else:
            kept = page.hits
        hits: list[LogHit] = []
        cut_msgs = 0
        for rec in kept:
            hit, cut = _hit(rec, include_fields)
            cut_msgs += cut
            hits.append(hit)
        if cut_msgs:
            notes.append(f"{cut_msgs} message(s) cut at {MAX_MESSAGE_CHARS} characters")
        if not page.total_exact:
            notes.append("total counts full-text matches up to 10,000; narrow the window for an exact count")
        if not hits and not cursor:
            notes.append(self._bounds_note())
        return SearchLogsResult(total=page.total, total_is_lower_bound=not page.total_exact, returned=len(hits),
                                hits=hits, truncated=truncated, next_cursor=next_cursor, notes=notes)

    def _unknown_filters(self, service: str | None, level: str | None, notes: list[str]) -> bool:
        """True (and notes listing the known values) when a service or level filter names nothing stored."""
        if service is None and level is None:
            return False
        services, levels = self.store.facets()
        empty = False
        if service is not None and service not in services:
            notes.append(_known_note("service", service, services))
            empty = True
        if level is not None:
            for raw in [x for x in level.split(",") if x.strip()] or [level]:
                if normalize_level(raw) not in levels:
                    notes.append(_known_note("level", raw.strip() or raw, levels))
                    empty = True
        return empty

    def _bounds_note(self) -> str:
        bounds = self.store.time_bounds()
        if bounds is None:
            return self._empty_note()
        return f"no matching lines; the store holds logs from {iso(bounds[0])} to {iso(bounds[1])}"

    # ------------------------------------------------------------------ get_trace
    @tool(title="Get a trace's logs", read_only=True, idempotent=True, open_world=False)
    async def get_trace(
        self,
        trace_id: Annotated[str, Field(description="Exact trace id, e.g. a DLQ message's traceId.", min_length=1,
                                       max_length=MAX_NAME_CHARS)],
        limit: Annotated[int, Field(description="Most lines, 1-500.")] = 200,
    ) -> TraceResult:
        """Every log line of one trace, oldest first, with the services it passed and its
        first ERROR. Exact id; an unknown one fails naming ids with its prefix."""
        return await self._run(self._get_trace, trace_id, limit)

    def _get_trace(self, trace_id: str, limit: int) -> TraceResult:
        notes: list[str] = []
        if not _text_arg("trace_id", trace_id, notes, empty_means_absent=False) or not trace_id.strip():
            raise InvalidInput("trace_id is empty.", "pass the exact trace id, e.g. the traceId of a DLQ message.")
        limit = clamp("limit", limit, 1, MAX_LIMIT, notes)
        tr = self.store.get_trace(trace_id.strip(), limit=limit)
        notes += tr.notes
        if tr.trace_id != trace_id:
            notes.append(f"matched trace_id {tr.trace_id!r} (normalised from {trace_id!r})")
        kept, over = take_within(tr.lines, self.budget, lambda r: _size(r, False), used=600)
        if over:
            notes.append(f"stopped at {len(kept)} lines to fit the {self.settings.max_result_bytes}-byte result "
                         "budget")
        lines: list[LogHit] = []
        cut_msgs = 0
        for rec in kept:
            hit, cut = _hit(rec, False)
            cut_msgs += cut
            lines.append(hit)
        truncated = len(lines) < tr.line_count
        if truncated:
            notes.append(f"showing the first {len(lines)} of {tr.line_count} lines; use search_logs(trace_id=..., "
                         "start=...) for later ones")
        if cut_msgs:
            notes.append(f"{cut_msgs} message(s) cut at {MAX_MESSAGE_CHARS} characters")
        first_ms, last_ms = tr.lines[0].ts_ms, tr.lines[len(lines) - 1].ts_ms
        return TraceResult(
            trace_id=tr.trace_id, line_count=tr.line_count, services=tr.services,
            start=ms_iso(first_ms), end=ms_iso(last_ms), duration_ms=last_ms - first_ms,
            first_error=_hit(tr.first_error, False)[0] if tr.first_error else None,
            lines=lines, truncated=truncated, notes=notes,
        )

    # ------------------------------------------------------------------ log_stats
    @tool(title="Count logs over time", read_only=True, idempotent=True, open_world=False)
    async def log_stats(
        self,
        start: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "ISO-8601 or relative ('-6h'); default: 6 hours before end."))] = None,
        end: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "Same forms as start; default: the newest line."))] = None,
        group_by: Annotated[Literal["level", "service"], Field(description="Per level or per service.")] = "level",
        interval: Annotated[int | Annotated[str, Field(max_length=32)] | None, Field(description=(
            "Bucket width: seconds (300) or '30s', '5m', '1h'; default: ~40 buckets."))] = None,
        service: Annotated[str | None, Field(max_length=MAX_NAME_CHARS,
                                             description="Only this service (exact).")] = None,
        level: Annotated[str | None, Field(max_length=MAX_NAME_CHARS, description=(
            "Only this level, or several: 'WARN,ERROR'."))] = None,
    ) -> LogStatsResult:
        """Count log lines per level (or service) in time buckets: when errors began
        (`rise_at`), without reading lines."""
        return await self._run(self._log_stats, start, end, group_by, interval, service, level)

    def _log_stats(self, start: str | None, end: str | None, group_by: str, interval: int | str | None,
                   service: str | None, level: str | None) -> LogStatsResult:
        notes: list[str] = []
        service = _text_arg("service", service, notes)
        level = _text_arg("level", level, notes)
        seconds = parse_duration(interval, name="interval")
        now = utcnow()
        bounds = self.store.time_bounds()
        if start is None and end is None and bounds is not None:
            t1 = bounds[1]
            t0 = max(bounds[0], t1 - DEFAULT_STATS_SPAN)
            if now - t1 > timedelta(minutes=5):
                notes.append(f"window ends at the newest stored line ({iso(t1)}), not now")
        elif start is None and end is None:
            t0, t1 = now - DEFAULT_STATS_SPAN, now
        else:
            t_end = parse_time(end or "now", now=now, name="end")
            t0, t1, window_notes = parse_window(start or iso(t_end - DEFAULT_STATS_SPAN), end,
                                                max_span=MAX_SPAN, now=now)
            notes += window_notes
            if bounds is not None and t0 <= bounds[1] and t1 >= bounds[0]:
                c0, c1 = max(t0, bounds[0]), min(t1, bounds[1])
                if (t1 - t0) - (c1 - c0) > max((t1 - t0) / 10, timedelta(minutes=1)):
                    notes.append(f"window clamped to the stored logs: {iso(c0)} to {iso(c1)} "
                                 f"(asked {iso(t0)} to {iso(t1)})")
                    t0, t1 = c0, c1
        span = max((t1 - t0).total_seconds(), 1.0)
        if seconds is None:
            seconds = _nice(span / TARGET_BUCKETS)
        elif seconds < 1:
            notes.append(f"interval {seconds:g}s is below 1s; using 1s")
            seconds = 1.0
        elif seconds > MAX_SPAN.total_seconds():
            longest = _human(MAX_SPAN.total_seconds())
            notes.append(f"interval {seconds:g}s is longer than the longest window ({longest}); using {longest}")
            seconds = MAX_SPAN.total_seconds()
        if span / seconds > MAX_BUCKETS:
            wider = _nice(span / MAX_BUCKETS)
            notes.append(f"interval {_human(seconds)} gives more than {MAX_BUCKETS} buckets; "
                         f"widened to {_human(wider)}")
            seconds = float(wider)
        if bounds is None:
            notes.append(self._empty_note())
        stats = self.store.stats(t0, t1, group_by, seconds, service=service, level=level)
        notes += stats.notes
        empty = not stats.total and self._unknown_filters(service, level, notes)
        groups = [] if empty else stats.groups
        out_groups = []
        starts = [ms_iso(b) for b in stats.bucket_starts_ms]
        coverage = [max(0, min(b + stats.interval_ms, stats.end_ms + 1) - max(b, stats.start_ms)) / 1000
                    for b in stats.bucket_starts_ms]
        for g in groups[:MAX_GROUPS]:
            peak = max(range(len(g.counts)), key=lambda i: g.counts[i]) if g.counts else None
            rise = _rise(g.counts, coverage)
            out_groups.append(StatsGroup(
                key=g.key, total=g.total, counts=g.counts,
                first_seen=ms_iso(g.first_ms) if g.first_ms is not None else None,
                last_seen=ms_iso(g.last_ms) if g.last_ms is not None else None,
                peak_bucket=starts[peak] if peak is not None else None,
                rise_at=starts[rise] if rise is not None else None,
            ))
        truncated = len(groups) > MAX_GROUPS
        if truncated:
            rest = groups[MAX_GROUPS:]
            notes.append(f"{len(rest)} smaller groups ({sum(g.total for g in rest):,} lines) not shown; filter by "
                         "service or level to see them")
        total = 0 if empty else stats.total
        if not total and bounds is not None and not empty:
            notes.append(f"no lines in this window; the store holds logs from {iso(bounds[0])} to {iso(bounds[1])}")
        return LogStatsResult(group_by=group_by, interval_seconds=seconds, start=ms_iso(stats.start_ms),
                              end=ms_iso(stats.end_ms), bucket_starts=starts, total=total, groups=out_groups,
                              truncated=truncated, notes=notes)

    # ------------------------------------------------------------------ log_patterns
    @tool(title="Find log patterns", read_only=True, idempotent=True, open_world=False)
    async def log_patterns(
        self,
        start: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "ISO-8601 or relative ('-1h'); default: 1 hour before end."))] = None,
        end: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "Same forms as start; default: the newest line."))] = None,
        service: Annotated[str | None, Field(max_length=MAX_NAME_CHARS,
                                             description="Only this service (exact).")] = None,
        level: Annotated[str | None, Field(max_length=MAX_NAME_CHARS, description=(
            "Only this level, or several: 'WARN,ERROR'."))] = None,
        compare_to: Annotated[str | None, Field(max_length=MAX_TIME_CHARS, description=(
            "Baseline window start (as long as the window); default: the window before; 'none': no "
            "comparison."))] = None,
        limit: Annotated[int, Field(description="Most patterns, 1-100.")] = 20,
    ) -> LogPatternsResult:
        """Group the window's messages into templates, each new, grew or steady
        against the window before: what changed when it broke, with a sample line each."""
        return await self._run(self._log_patterns, start, end, service, level, compare_to, limit)

    def _log_patterns(self, start: str | None, end: str | None, service: str | None, level: str | None,
                      compare_to: str | None, limit: int) -> LogPatternsResult:
        from opsmcp.analysis import log_patterns as lp

        notes: list[str] = []
        service = _text_arg("service", service, notes)
        level = _text_arg("level", level, notes)
        compare_to = _text_arg("compare_to", compare_to, notes)
        limit = clamp("limit", limit, 1, 100, notes)
        now = utcnow()
        if end is None and start is None:
            bounds = self.store.time_bounds()
            t1 = bounds[1] if bounds else now
            t0 = t1 - timedelta(hours=1)
        else:
            t_end = parse_time(end or "now", now=now, name="end")
            t0, t1, window_notes = parse_window(start or iso(t_end - timedelta(hours=1)), end, max_span=MAX_SPAN,
                                                now=now)
            notes += window_notes
        cur = lp.Window()
        base: lp.Window | None = None
        baseline_lines = None
        b0 = b1 = None
        if (compare_to or "").strip().lower() != "none":
            b0 = parse_time(compare_to, now=now, name="compare_to") if compare_to else t0 - (t1 - t0)
            b1 = b0 + (t1 - t0)
            base = lp.Window()
            baseline_lines = lp.window_lines(self.store, b0, b1, service, level, base)
        clusters, miner = lp.mine(lp.window_lines(self.store, t0, t1, service, level, cur), baseline_lines)
        for w, name in ((cur, "window"), (base, "baseline")):
            if w is not None and w.sampled:
                notes.append(f"the {name} holds {w.total:,} lines: mined a sample of {w.mined:,} (equal shares of "
                             "ten slices); counts are estimates")
            if w is not None and w.capped:
                notes.append(f"the {self.store.name} log backend could not page through the {name}: mined its newest "
                             f"{w.mined:,} of {w.total:,} lines")
        rank = {"new": 0, "grew": 1, "steady": 2, None: 3}
        out: list[LogPattern] = []
        for cid, c in clusters.items():
            if not c.count or c.sample is None:
                continue
            state, growth = lp.status(c, cur, base)
            sample = c.sample.message if len(c.sample.message) <= 300 else c.sample.message[:300] + "…"
            out.append(LogPattern(
                template=lp.template_of(miner, cid), status=state, count=round(c.count * cur.scale),
                baseline_count=round(c.baseline * base.scale) if base is not None else None, growth=growth,
                first_seen=ms_iso(c.first_ms) if c.first_ms is not None else None,
                last_seen=ms_iso(c.last_ms) if c.last_ms is not None else None,
                services=[s for s, _ in sorted(c.services.items(), key=lambda kv: -kv[1])][:5],
                sample=sample, sample_trace_id=c.sample.trace_id))
        out.sort(key=lambda p: (rank[p.status], -(p.growth or 0) if p.status == "grew" else 0, -p.count))
        truncated = len(out) > limit
        if truncated:
            notes.append(f"{len(out) - limit} more patterns not shown; raise limit or filter by service/level")
        if not cur.total:
            notes.append("no lines in this window")
        return LogPatternsResult(
            start=iso(t0), end=iso(t1), baseline_start=iso(b0) if b0 else None, baseline_end=iso(b1) if b1 else None,
            lines=cur.total, lines_mined=cur.mined, baseline_lines=base.total if base is not None else None,
            patterns=out[:limit], truncated=truncated, notes=notes)

    def _empty_note(self) -> str:
        if self.store.name == "embedded":
            return "the log store is empty; load logs with `opsmcp logs load FILE`"
        name = self.store.name
        return f"the {name} log backend holds no lines; load some with `opsmcp logs load --to {name} FILE`"

    # ------------------------------------------------------------------ for other toolsets
    async def error_lines(self, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """For each trace id, its ERROR/CRITICAL/FATAL lines oldest first (at most 20 each:
        timestamp, service, level, message, event_id), in one query: the DLQ analyzer's
        ``correlate``. Not a tool."""
        return await self._run(self.store.error_lines, list(trace_ids))


__all__ = [
    "LogHit", "LogPattern", "LogPatternsResult", "LogStatsResult", "LogTools", "SearchLogsResult", "StatsGroup",
    "TraceResult",
]
