"""The pure JSON Lines parser: the ingest hot loop, with no SQLite in it.

:func:`parse_batch` turns ``(line number, text)`` pairs into ``logs`` rows and per-minute
counts; bad lines are counted with their numbers in an :class:`IngestReport`, never
raised. Field names it understands are listed in its docstring (and in the README).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from typing import Any

from opsmcp.backends.logbackend import LEVEL_CACHE, normalize_level
from opsmcp.backends.logstore.schema import MAX_TS_MS, SEQ_BITS, SEQ_MASK

MAX_BAD_REPORTED = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_UTC = UTC
_SURROGATE = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape), or lone surrogates

# Field names, first present wins (issue: common shippers' names map onto ours).
TIMESTAMP_KEYS = ("@timestamp", "timestamp", "time", "ts")
MESSAGE_KEYS = ("message", "msg")
LEVEL_KEYS = ("level", "severity")
SERVICE_KEYS = ("service", "service.name", "svc", "app", "logger")
TRACE_KEYS = ("trace_id", "traceId", "trace.id")
EVENT_KEYS = ("event_id", "eventId")
# Kept out of a line's stored "other fields" (the ``doc`` column): the indexed values.
INDEXED_KEYS = frozenset(("@timestamp", "timestamp", "level", "service", "message", "trace_id", "event_id"))


@dataclass
class BadLine:
    """One input line that was not loaded: where it was and why."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class IngestReport:
    """What a load did. Bad lines are counted in full; the first 50 are listed."""

    loaded: int = 0
    bad: int = 0
    blank: int = 0
    skipped: int = 0  # lines of files already stored by an earlier load
    bad_lines: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def lines_per_second(self) -> float:
        """Loaded lines per second of wall time."""
        return self.loaded / self.seconds if self.seconds > 0 else 0.0

    def add_bad(self, source: str, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < MAX_BAD_REPORTED:
            self.bad_lines.append(BadLine(source, line, reason))

    def summary(self) -> str:
        """A few human lines: counts, speed, and the bad lines with their numbers."""
        out = [
            f"loaded {self.loaded:,} lines from {', '.join(self.sources) or '-'} in {self.seconds:.2f} s "
            f"({self.lines_per_second:,.0f} lines/s); bad lines: {self.bad:,}"
            + (f"; blank lines skipped: {self.blank:,}" if self.blank else "")
            + (f"; {self.skipped:,} lines already stored by an earlier load skipped" if self.skipped else "")
        ]
        out += [f"  {b}" for b in self.bad_lines]
        if self.bad > len(self.bad_lines):
            out.append(f"  ... and {self.bad - len(self.bad_lines):,} more bad lines")
        return "\n".join(out)



def _ts_from_number(value: float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds → milliseconds."""
    v = abs(value)
    if v < 1e11:
        return round(value * 1000)
    if v < 1e14:
        return round(value)
    if v < 1e17:
        return round(value / 1000)
    return round(value / 1_000_000)


def parse_timestamp(value: Any) -> int:
    """A document's timestamp → epoch ms. Raises ValueError with a short reason."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            text = value.strip()
            try:
                ms = _ts_from_number(float(text))
            except ValueError:
                try:  # pre-3.11 shapes fromisoformat may reject (lower-case z, comma decimals)
                    dt = datetime.fromisoformat(text.replace("z", "+00:00").replace(",", "."))
                except ValueError:
                    raise ValueError(f"timestamp {value[:40]!r} is not ISO-8601 or epoch time") from None
            else:
                dt = None
        if dt is not None:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=_UTC)
            ms = (dt - _EPOCH) // _ONE_MS
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("timestamp is not a finite number")
        ms = _ts_from_number(value)
    elif value is None:
        raise ValueError("no @timestamp or timestamp field")
    else:
        raise ValueError(f"timestamp has type {type(value).__name__}, expected an ISO-8601 string or epoch number")
    if not 0 <= ms <= MAX_TS_MS:
        raise ValueError(f"timestamp {value!r} is out of range (1970..2248)")
    return ms


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def parse_batch(
    batch: Sequence[tuple[int, str]], seq: int, source: str, report: IngestReport,
    counts: dict[tuple[int, str, str], int] | None = None, *, yield_every: int = 0,
) -> list[tuple[Any, ...]]:
    """Parse ``(line number, text)`` pairs into ``logs`` rows; count bad and blank lines.

    ``counts`` (when given) is incremented per (minute, service, level) of the good lines.
    ``yield_every`` > 0 releases the GIL every that many lines, so a writer thread that
    finished a statement does not wait for the interpreter's 5 ms switch interval.

    Fields: ``@timestamp`` | ``timestamp`` | ``time`` | ``ts`` (ISO-8601, or epoch
    s/ms/us/ns), ``message`` | ``msg`` (required), ``level`` | ``severity`` (default
    ``UNKNOWN``), ``service`` | ``service.name`` | ``svc`` | ``app`` | ``logger`` (default
    ``unknown``), ``trace_id`` | ``traceId`` | ``trace.id``, ``event_id`` | ``eventId``: the
    ``*_KEYS`` tuples of this module, first present wins (:func:`standard_fields` reads the
    same names one document at a time).
    """
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    if counts is None:
        counts = {}
    cget = counts.get
    loads = json.loads
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # built once: the C encoder
    encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
    indexed = INDEXED_KEYS
    fromiso = datetime.fromisoformat
    epoch, one_ms, utc = _EPOCH, _ONE_MS, _UTC
    level_cache = LEVEL_CACHE
    pause = time.sleep
    for no, line in batch:
        if yield_every and not no % yield_every:
            pause(0)
        if not line.isascii() and _SURROGATE.search(line):
            report.add_bad(source, no, "not valid UTF-8")
            continue
        try:
            doc = loads(line)
        except ValueError as exc:
            if not line.strip():
                report.blank += 1
                continue
            msg = getattr(exc, "msg", str(exc))
            pos = getattr(exc, "pos", None)
            where = f" at character {pos + 1})" if pos is not None else ")"
            report.add_bad(source, no, f"invalid JSON ({msg}{where}")
            continue
        except RecursionError:
            report.add_bad(source, no, "invalid JSON (nested too deeply)")
            continue
        if type(doc) is not dict:
            kind = "array" if isinstance(doc, list) else type(doc).__name__
            report.add_bad(source, no, f"not a JSON object (a JSON {kind}; one object per line expected)")
            continue
        get = doc.get
        ts = get("@timestamp")
        if ts is None:
            ts = get("timestamp")
            if ts is None:
                ts = get("time")
                if ts is None:
                    ts = get("ts")
        if type(ts) is str:
            try:
                dt = fromiso(ts)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=utc)
                ms = (dt - epoch) // one_ms
                if not 0 <= ms <= MAX_TS_MS:
                    raise ValueError
            except (ValueError, OverflowError):
                try:
                    ms = parse_timestamp(ts)
                except (ValueError, OverflowError) as exc:
                    report.add_bad(source, no, str(exc))
                    continue
        else:
            try:
                ms = parse_timestamp(ts)
            except (ValueError, OverflowError) as exc:
                report.add_bad(source, no, str(exc))
                continue
        message = get("message")
        if message is None:
            message = get("msg")
            if message is None:
                report.add_bad(source, no, "no message field")
                continue
        if type(message) is not str:
            message = _text(message)
        level = get("level")
        if level is None:
            level = get("severity")
        if type(level) is str:
            lv = level_cache.get(level)
            level = lv if lv is not None else normalize_level(level)
        else:
            level = normalize_level(level)
        service = get("service")
        if service is None:
            service = get("service.name") or get("svc") or get("app") or get("logger") or "unknown"
        if type(service) is not str:
            service = _text(service) if not isinstance(service, dict) else _text(service.get("name")) or "unknown"
        if not service or service == "*":
            service = "unknown"
        trace = get("trace_id")
        if trace is None:
            trace = get("traceId")
            if trace is None:
                trace = get("trace.id")
        if trace is not None and type(trace) is not str:
            trace = _text(trace)
        event = get("event_id")
        if event is None:
            event = get("eventId")
        if event is not None and type(event) is not str:
            event = _text(event)
        escaped = "\\ud" in line or "\\uD" in line
        if escaped and any(
                isinstance(v, str) and _SURROGATE.search(v) for v in (message, service, level, trace, event)):
            report.add_bad(source, no, "a string holds an unpaired UTF-16 surrogate escape (\\udXXX)")
            continue
        rest = {k: v for k, v in doc.items() if k not in indexed}
        extra = (encode_ascii(rest) if escaped else encode(rest)) if rest else ""
        append(((ms << SEQ_BITS) | (seq & SEQ_MASK), service, level, trace, event, message, extra))
        seq += 1
        key = (ms // 60_000, service, level)
        counts[key] = cget(key, 0) + 1
    return rows




def _first(doc: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = doc.get(key)
        if value is not None:
            return value
    return None


def standard_fields(doc: dict[str, Any]) -> tuple[int, str, str, str, str | None, str | None]:
    """One document's (epoch ms, service, level, message, trace id, event id), read with
    the same field names and defaults as :func:`parse_batch` (for loaders that send
    documents elsewhere, e.g. OpenSearch).

    Raises:
        ValueError: no message, or a missing/unreadable/out-of-range timestamp (the reason).
    """
    ms = parse_timestamp(_first(doc, TIMESTAMP_KEYS))
    message = _first(doc, MESSAGE_KEYS)
    if message is None:
        raise ValueError("no message field")
    service = _first(doc, SERVICE_KEYS)
    if isinstance(service, dict):
        service = service.get("name")
    service = _text(service) or "unknown"
    if service == "*":
        service = "unknown"
    trace, event = _first(doc, TRACE_KEYS), _first(doc, EVENT_KEYS)
    return (ms, service, normalize_level(_first(doc, LEVEL_KEYS)), _text(message) or "",
            _text(trace) if trace is not None else None, _text(event) if event is not None else None)
