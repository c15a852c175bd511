"""The log-backend interface: what the logs toolset and the DLQ correlation ask of any engine.

Four engines implement it: the embedded SQLite store (:class:`opsmcp.backends.logstore.LogStore`,
the default), OpenSearch (:class:`opsmcp.backends.opensearch.OpenSearchLogs`), CloudWatch
Logs (:class:`opsmcp.backends.cloudwatch_logs.CloudWatchLogs`) and Loki
(:class:`opsmcp.backends.loki.LokiLogs`). The toolset never knows which one answers; it
reads the neutral result types defined here.
``OPSMCP_LOG_BACKEND=embedded|opensearch|cloudwatch|loki`` selects one
(:func:`opsmcp.backends.log_factory.build_log_backend`); this module never imports its
implementations.

Every method is synchronous (the toolset calls it off the event loop) and raises only
:mod:`opsmcp.errors` types: :class:`InvalidInput` for a bad query or cursor,
:class:`NotFound` for an unknown trace or a missing store/index,
:class:`BackendUnavailable` for an engine that is down or throttling. Where an engine
cannot do what another does, the result's ``notes`` say so.

Also here, because every engine needs them: times as epoch milliseconds (:func:`to_ms`,
:func:`~opsmcp.times.ms_iso`), level normalisation (:func:`normalize_level`) and its inverse
(:func:`level_spellings`), the engines' field-name settings (:func:`with_field_overrides`),
the newest window a query reads (:func:`newest_window`), the ids a trace lookup tries
(:func:`trace_candidates`) and the answers of ``get_trace`` and ``error_lines``
(:func:`trace_lines`, :func:`errors_by_trace`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

from opsmcp.errors import InvalidInput

from opsmcp.times import ms_iso as ms_iso  # re-exported: both engines format their times with it

ERROR_LEVELS = ("ERROR", "CRITICAL", "FATAL")
COUNT_CAP = 10_000  # full-text matches are counted up to this many
LOG_BACKENDS = ("embedded", "opensearch", "cloudwatch", "loki")
STANDARD_FIELDS = ("@timestamp", "timestamp", "level", "service", "message", "trace_id", "event_id")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_LEVEL_ALIASES = {"WARNING": "WARN", "ERR": "ERROR", "INFORMATION": "INFO", "CRIT": "CRITICAL", "EMERG": "FATAL"}
_NUMERIC_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}  # pino/bunyan
LEVEL_CACHE: dict[str, str] = {}
#: Canonical level -> its spellings, the canonical one first (the inverse of :func:`normalize_level`'s aliases).
LEVEL_SPELLINGS: dict[str, tuple[str, ...]] = {}
for _alias, _canon in _LEVEL_ALIASES.items():
    LEVEL_SPELLINGS[_canon] = (*LEVEL_SPELLINGS.get(_canon, (_canon,)), _alias)

F = TypeVar("F")


# --------------------------------------------------------------------------- times and levels


def to_ms(t: datetime) -> int:
    """Epoch milliseconds of an aware (or naive = UTC) datetime, exactly."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _ONE_MS


def ms_to_datetime(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


def normalize_level(value: Any) -> str:
    """Canonical level: upper case, ``WARNING``→``WARN``, ``ERR``→``ERROR``, pino numbers."""
    if isinstance(value, str):
        hit = LEVEL_CACHE.get(value)
        if hit is not None:
            return hit
        canon = value.strip().upper()
        canon = _LEVEL_ALIASES.get(canon, canon)
        if not canon or canon == "*":
            canon = "UNKNOWN"
        if len(LEVEL_CACHE) < 1000:
            LEVEL_CACHE[value] = canon
        return canon
    if isinstance(value, bool) or value is None:
        return "UNKNOWN"
    if isinstance(value, (int, float)):
        return _NUMERIC_LEVELS.get(int(value), str(int(value)))
    return str(value).upper()


def level_spellings(levels: Sequence[str], *, cases: bool = False) -> list[str]:
    """Canonical ``levels`` with the other spellings shippers use (``WARN``: ``WARN``,
    ``WARNING``), for engines that match the stored text; with ``cases`` each also in lower
    case and capitalised (``warn``, ``Warn``), for engines that match it exactly."""
    out = [s for lv in levels for s in LEVEL_SPELLINGS.get(lv, (lv,))]
    if cases:
        out = [v for s in out for v in (s, s.lower(), s.capitalize())]
    return list(dict.fromkeys(out))


def levels_arg(level: str | Sequence[str] | None) -> list[str] | None:
    """A level filter (``'WARN,ERROR'`` or a list) as distinct canonical levels; None for none."""
    if level is None:
        return None
    items = level.split(",") if isinstance(level, str) else list(level)
    out = [normalize_level(x) for x in items if str(x).strip()]
    return list(dict.fromkeys(out)) or None


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class LogRecord:
    """One log line as every engine returns it.

    ``ts_ms`` is epoch milliseconds; ``doc`` the line's other JSON fields (when asked for);
    ``cursor`` resumes a search right after this line (``None`` when the engine cannot);
    ``id`` is an engine-local ordering key (the embedded store's rowid, else 0).
    """

    ts_ms: int
    service: str
    level: str
    message: str
    trace_id: str | None = None
    event_id: str | None = None
    doc: str | None = None
    cursor: str | None = None
    id: int = 0

    @property
    def timestamp(self) -> str:
        """ISO-8601 UTC with milliseconds."""
        return ms_iso(self.ts_ms)

    def fields(self) -> dict[str, Any]:
        """The original document's fields other than the indexed ones (needs ``doc``)."""
        if not self.doc:
            return {}
        try:
            data = json.loads(self.doc)
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        for key in STANDARD_FIELDS:
            data.pop(key, None)
        return data


@dataclass
class SearchPage:
    """Hits newest first, the number of matching lines and the cursor for the next page."""

    hits: list[LogRecord]
    total: int
    total_exact: bool
    next_cursor: str | None
    notes: list[str] = field(default_factory=list)


@dataclass
class TraceLines:
    """All lines of one trace, oldest first (at most ``limit``), and what it touched."""

    trace_id: str
    lines: list[LogRecord]
    line_count: int
    services: list[str]
    first_error: LogRecord | None
    notes: list[str] = field(default_factory=list)


@dataclass
class StatsGroup:
    """Counts of one group (a level or a service) per bucket."""

    key: str
    total: int
    counts: list[int]
    first_ms: int | None
    last_ms: int | None


@dataclass
class Stats:
    """Bucketed counts: ``bucket_starts_ms[i]`` is the start of ``counts[i]`` in every group."""

    start_ms: int
    end_ms: int
    interval_ms: int
    group_by: str
    bucket_starts_ms: list[int]
    groups: list[StatsGroup]
    total: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Check:
    """One line of ``opsmcp doctor``: what was checked, whether it passed, what to do."""

    label: str
    ok: bool
    detail: str
    warning: bool = False  # a finding that works but should be fixed (not a failure)


# --------------------------------------------------------------------------- the interface


@runtime_checkable
class LogBackend(Protocol):
    """What a log engine answers. Times are aware datetimes; windows are inclusive."""

    name: str

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
        """Lines matching every filter, newest first: ``query`` full text over the message
        (words, "phrases", AND/OR/NOT, prefix*), exact ``service``, ``level`` (one or a
        list) and ``trace_id``, the window, ``limit`` hits, ``cursor`` = a previous
        ``next_cursor``. Raises InvalidInput for a malformed query or cursor."""
        ...

    def get_trace(self, trace_id: str, *, limit: int = 1000) -> TraceLines:
        """Every line of one trace (exact id only: ids sharing segments never mix), oldest
        first, at most ``limit``. Raises NotFound when no line has this id."""
        ...

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
        """Line counts per ``group_by`` (``level`` or ``service``) per bucket of
        ``interval_seconds`` aligned to the epoch, in [start, end]."""
        ...

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """For each trace id, its ERROR/CRITICAL/FATAL lines oldest first (at most
        ``per_trace``): ``{trace_id: [{"timestamp", "service", "level", "message",
        "event_id"}]}``. Traces without errors (or unknown) are absent."""
        ...

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """Known services and known levels with their line counts, most first."""
        ...

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """The first and last stored timestamps, or None when there are no lines."""
        ...

    def check(self) -> list[Check]:
        """The doctor's checks of this engine: reachable, data where expected, one query."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def with_field_overrides(cls: type[F], overrides: dict[str, str], setting: str,
                         name_pattern: re.Pattern[str] | None = None) -> F:
    """The field names ``cls`` (a dataclass of the engine's field names) with ``overrides``
    (attribute -> field name) from ``setting`` (``OPSMCP_LOKI_FIELDS``...).

    Raises:
        InvalidInput: an unknown key, or (with ``name_pattern``) a name that is not a plain
            (dotted) field name.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidInput(f"Unknown field setting(s) {unknown} in {setting}.", f"use keys {sorted(known)}.")
    for key, name in overrides.items():
        if name_pattern is not None and not name_pattern.match(name):
            raise InvalidInput(f"{setting}: {key}={name!r} is not a plain field name.",
                               "use letters, digits and _ (dots for nested fields), e.g. traceId or ctx.level.")
    return cls(**overrides)


def newest_window(start_ms: int | None, end_ms: int | None, max_ms: int, setting: str,
                  notes: list[str]) -> tuple[int, int]:
    """The window ``(lo, hi)`` in epoch ms one query reads: ``end_ms`` (default now) back to
    ``start_ms`` (default ``max_ms`` before it), held to its newest ``max_ms``; a cut is said
    in ``notes``, naming ``setting`` (the bound's setting)."""
    hi = end_ms if end_ms is not None else to_ms(datetime.now(UTC))
    lo = start_ms if start_ms is not None else hi - max_ms
    if hi - lo > max_ms:
        lo = hi - max_ms
        notes.append(f"read the newest {max_ms / 3_600_000:g} h of the window: {setting} bounds each query; "
                     f"from {ms_iso(lo)}")
    return lo, hi


def trace_candidates(trace_id: str) -> list[str]:
    """The ids a trace lookup tries, in order: as given, trimmed, trimmed and lower-cased
    (exact ids only: ids that share segments never mix)."""
    return list(dict.fromkeys([trace_id, trace_id.strip(), trace_id.strip().lower()]))


def errors_by_trace(records: Iterable[LogRecord], per_trace: int) -> dict[str, list[dict[str, Any]]]:
    """:meth:`LogBackend.error_lines`' answer from ``records`` (in the order given): the
    ERROR-and-worse lines of each trace id, at most ``per_trace`` each; traces without one
    are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.level in ERROR_LEVELS and r.trace_id is not None and len(out.setdefault(r.trace_id, [])) < per_trace:
            out[r.trace_id].append(error_line(r.ts_ms, r.service, r.level, r.message, r.event_id))
    return {t: v for t, v in out.items() if v}


def error_line(ts_ms: int, service: str, level: str, message: str, event_id: str | None) -> dict[str, Any]:
    """One entry of :meth:`LogBackend.error_lines`."""
    return {"timestamp": ms_iso(ts_ms), "service": service, "level": level, "message": message, "event_id": event_id}


def trace_lines(trace_id: str, recs: list[LogRecord], limit: int, size: int, notes: list[str],
                fetched: int | None = None) -> TraceLines:
    """The :class:`TraceLines` of one trace's records (oldest first), ``size`` being how many
    lines the engine was asked for and ``fetched`` how many it returned (default: as many as
    ``recs``; more when the engine's match was wider than the exact id): reaching ``size``
    means there may be more, said in ``notes``."""
    if (len(recs) if fetched is None else fetched) >= size:
        notes.append(f"the trace has more than {len(recs):,} lines; counts cover the first {len(recs):,}")
    services = list(dict.fromkeys(r.service for r in recs))
    first_error = next((r for r in recs if r.level in ERROR_LEVELS), None)
    return TraceLines(trace_id, recs[:limit], len(recs), services, first_error, notes)


def most_first(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` ordered by count (most first), then name: how facets are listed."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
