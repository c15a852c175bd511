"""Time arguments: ISO-8601 or relative forms (``-15m``, ``-6h``, ``-2d``, ``now``).

Every tool that takes a time calls :func:`parse_time`; every tool that takes a window
calls :func:`parse_window`, so all of them accept and reject the same shapes.

Every time is held to :data:`MIN_TIME` ... :data:`MAX_TIME` (1900 to 2200 UTC). Inside that
range, the arithmetic the toolsets do on a time (a default start 31 days before an end, a
log-store row id of milliseconds shifted by 20 bits, CloudWatch's request) cannot overflow;
outside it a caller gets :class:`~opsmcp.errors.InvalidInput` naming the argument, the
accepted forms and the range, never an ``OverflowError``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import overload

from opsmcp.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|secs?|m|mins?|h|hrs?|d|w)?\s*$", re.I)
_RELATIVE = re.compile(r"^\s*(?:now\s*)?-\s*(\d+(?:\.\d+)?\s*[a-z]+)\s*$", re.I)
#: Seconds per duration unit (every unit :func:`parse_duration` and relative times accept).
UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60,
                "h": 3600, "hr": 3600, "hrs": 3600, "d": 86400, "w": 604800}
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
RANGE = "between 1900-01-01T00:00:00Z and 2200-01-01T00:00:00Z"
EXAMPLES = f"use ISO-8601 ('2026-11-21T14:05:00Z') or a relative form ('-15m', '-6h', '-2d', 'now'), {RANGE}"
_SHOWN_CHARS = 60


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _shown(value: object) -> str:
    """``repr(value)`` cut to a readable length (a 1 MB argument must not become a 1 MB error)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(str(value)):,} characters)"


def _out_of_range(name: str, value: object) -> InvalidInput:
    return InvalidInput(f"{name}={_shown(value)} is out of range: times must lie {RANGE}.", EXAMPLES + ".")


def _duration_seconds(text: str, *, unit_required: bool) -> float | None:
    """Seconds of ``<number><unit>`` (``15m``, ``1.5h``, ``500ms``; a bare number is seconds
    unless ``unit_required``), or None when ``text`` is not of that shape."""
    m = _DURATION.match(text)
    if not m or (unit_required and not m.group(2)):
        return None
    return float(m.group(1)) * UNIT_SECONDS[(m.group(2) or "s").lower()]


def parse_duration(value: int | float | str | None, *, name: str = "duration") -> float | None:
    """A length of time in seconds: a number of seconds, or ``<number><unit>`` with unit ms,
    s, m, h, d or w (``'30s'``, ``'5m'``, ``'1h'``, ``'1d'``); None or an empty string is None.
    The one reader of durations: relative times (``-15m``) use the same units.

    Raises:
        InvalidInput: not of that shape, not finite, or not positive (the message names ``name``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        read = _duration_seconds(str(value), unit_required=False)
        if read is None:
            raise InvalidInput(f"Cannot read {name}={_shown(value)}.", "use seconds (300) or '30s', '5m', '1h', '1d'.")
        seconds = read
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{name} must be positive, got {_shown(value)}.", "use e.g. '5m' or 300.")
    return seconds


def parse_time(value: str | datetime, *, now: datetime | None = None, name: str = "time") -> datetime:
    """Parse one time argument into an aware UTC datetime in ``[MIN_TIME, MAX_TIME)``.

    Args:
        value: ``now``; ``-<n><unit>`` with unit s, m, h, d or w (``-15m`` is fifteen minutes
            ago); an ISO-8601 string (``Z`` or an offset; a naive time is taken as UTC); a
            date alone (``2026-11-21``, midnight UTC); or a datetime.
        now: the reference for relative forms (default: the current time).
        name: the argument's name, used in the error message.

    Returns:
        The time in UTC (``tzinfo`` is :data:`datetime.UTC`, whatever offset was given).

    Raises:
        InvalidInput: the value matches none of these forms, or lies outside 1900-2200 UTC
            (the message names ``name``, the forms and the range, and shows at most 60
            characters of the value).
    """
    now = now or utcnow()
    try:
        if isinstance(value, datetime):
            parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
        else:
            text = str(value).strip()
            m = _RELATIVE.match(text)
            if text.lower() == "now":
                parsed = now
            elif m and (ago := _duration_seconds(m.group(1), unit_required=True)) is not None:
                parsed = now - timedelta(seconds=ago)
            else:
                try:
                    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                except ValueError:
                    raise InvalidInput(f"Cannot read {name}={_shown(value)} as a time.", EXAMPLES + ".") from None
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)  # a far offset can leave datetime's range: OverflowError
    except (OverflowError, ValueError):  # timedelta(seconds=1e20), float('inf') seconds, year 1 at +05:00
        raise _out_of_range(name, value) from None
    if not MIN_TIME <= parsed < MAX_TIME:
        raise _out_of_range(name, value)
    return parsed


def parse_window(
    start: str | None,
    end: str | None,
    *,
    default_start: str = "-1h",
    max_span: timedelta | None = None,
    now: datetime | None = None,
    names: tuple[str, str] = ("start", "end"),
) -> tuple[datetime, datetime, list[str]]:
    """Parse a ``start``/``end`` pair into an ordered UTC window.

    Args:
        start: the window's start (default ``default_start``).
        end: the window's end (default ``now``).
        default_start: used when ``start`` is omitted.
        max_span: when set, a longer window is clamped to its last ``max_span`` and a note
            says so.
        now: the reference for relative forms.
        names: the two arguments' names as the caller's tool calls them, for messages.

    Returns:
        ``(start, end, notes)``: ``notes`` labels any clamping.

    Raises:
        InvalidInput: unreadable times, or ``start`` after ``end`` (a reversed range).
    """
    now = now or utcnow()
    t0 = parse_time(start or default_start, now=now, name=names[0])
    t1 = parse_time(end or "now", now=now, name=names[1])
    if t0 > t1:
        raise InvalidInput(
            f"The time range is reversed: {names[0]} {iso(t0)} is after {names[1]} {iso(t1)}.",
            f"swap {names[0]} and {names[1]}, or use a relative {names[0]} such as '-1h'.",
        )
    notes = []
    if max_span is not None and t1 - t0 > max_span:
        t0 = t1 - max_span
        notes.append(f"window clamped to the last {max_span} before end (the maximum span)")
    return t0, t1, notes


@overload
def iso(t: datetime | float, timespec: str = "milliseconds") -> str: ...
@overload
def iso(t: None, timespec: str = "milliseconds") -> None: ...
def iso(t: datetime | float | None, timespec: str = "milliseconds") -> str | None:
    """Format a time as ISO-8601 UTC with a ``Z`` suffix: the one time format of every
    answer, audit record and seeded log line. A naive datetime is taken as UTC.

    Args:
        t: a datetime, or epoch seconds (``time.time()``; approval requests, DLQ reads);
            None gives None.
        timespec: ``"milliseconds"`` (default), ``"seconds"`` or ``"microseconds"``
            (:meth:`datetime.isoformat`'s names).
    """
    if t is None:
        return None
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(t, UTC)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def now_iso(timespec: str = "milliseconds") -> str:
    """The current time as :func:`iso` formats it."""
    return iso(utcnow(), timespec)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_SECONDS: dict[int, str] = {}


def ms_iso(ms: int) -> str:
    """Epoch milliseconds (SQS ``SentTimestamp``, a log line's time) as :func:`iso` formats
    them, exactly, without float rounding. Cached per second (log answers format thousands of
    lines from a few seconds)."""
    sec, frac = divmod(int(ms), 1000)
    head = _ISO_SECONDS.get(sec)
    if head is None:
        if len(_ISO_SECONDS) > 8192:
            _ISO_SECONDS.clear()
        head = _ISO_SECONDS[sec] = (_EPOCH + timedelta(seconds=sec)).isoformat().replace("+00:00", "")
    return f"{head}.{frac:03d}Z"
