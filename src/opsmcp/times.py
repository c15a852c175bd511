"""Time arguments: ISO-8601 or relative forms (``-15m``, ``-6h``, ``-2d``, ``now``).

Every tool that takes a time calls :func:`parse_time`; every tool that takes a window
calls :func:`parse_window`, so all of them accept and reject the same shapes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, UTC

from opsmcp.errors import InvalidInput

_RELATIVE = re.compile(r"^\s*(?:now\s*)?-\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|w)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}
EXAMPLES = "use ISO-8601 ('2026-11-21T14:05:00Z') or a relative form ('-15m', '-6h', '-2d', 'now')"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_time(value: str | datetime, *, now: datetime | None = None, name: str = "time") -> datetime:
    """Parse one time argument into an aware UTC datetime.

    Args:
        value: ``now``; ``-<n><unit>`` with unit s, m, h, d or w (``-15m`` is fifteen minutes
            ago); an ISO-8601 string (``Z`` or an offset; a naive time is taken as UTC); a
            date alone (``2026-11-21``, midnight UTC); or a datetime.
        now: the reference for relative forms (default: the current time).
        name: the argument's name, used in the error message.

    Raises:
        InvalidInput: the value matches none of these forms.
    """
    now = now or utcnow()
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"Cannot read {name}={value!r} as a time.", EXAMPLES + ".") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def iso(t: datetime | None) -> str | None:
    """Format an aware datetime as ISO-8601 UTC with a ``Z`` suffix (milliseconds)."""
    if t is None:
        return None
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
