"""Time arguments: hostile values are clear tool errors, never the internal-error path.

Regression tests for issue 8 point E: ``start="-99999999999999999999d"`` raised
OverflowError inside ``times.py``; ``end`` in year 1 or 9999 passed parsing and overflowed in
the toolsets' window arithmetic; both reached the "Internal error in ..." branch of the
choke point. Every case is checked once on :func:`opsmcp.times.parse_time` and once through
every tool that takes a time, over the in-memory MCP client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsmcp.errors import InvalidInput
from opsmcp.times import MAX_TIME, MIN_TIME, parse_time, parse_window

NOW = datetime(2026, 11, 21, 14, 5, tzinfo=UTC)

HOSTILE = {
    "huge relative days": "-99999999999999999999d",
    "relative 2^63 seconds": "-9223372036854775808s",
    "relative past float range": "-" + "9" * 400 + "w",
    "year 1": "0001-01-01T00:00:00Z",
    "year 9999": "9999-12-31T23:59:59Z",
    "year 1 with a positive offset": "0001-01-01T00:00:00+05:00",
    "year 9999 with a negative offset": "9999-12-31T23:59:59-23:59",
    "just before the range": "1899-12-31T23:59:59Z",
    "at the exclusive end": "2200-01-01T00:00:00Z",
    "lone surrogate": "\ud800",
    "ISO time with a lone surrogate": "2026-11-21T14:05:00Z\udfff",
    "2^63 as digits": "9223372036854775808",
    "1 MB": "2026-11-21" + "9" * 1_000_000,
}


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_time_is_invalid_input_naming_argument_forms_and_range(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_time(value, now=NOW, name="until")
    text = str(caught.value)
    assert "until=" in text
    assert "'-15m'" in text and "ISO-8601" in text  # the accepted forms
    assert "1900-01-01T00:00:00Z" in text and "2200-01-01T00:00:00Z" in text  # the range
    assert len(text) < 600, "the error quotes a bounded part of the value"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("now", NOW),
        ("-15m", NOW - timedelta(minutes=15)),
        ("now - 2d", NOW - timedelta(days=2)),
        ("2026-11-21", datetime(2026, 11, 21, tzinfo=UTC)),
        ("2026-11-21T14:05:00+02:00", datetime(2026, 11, 21, 12, 5, tzinfo=UTC)),
        ("2026-11-21T14:05:00", datetime(2026, 11, 21, 14, 5, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1900-01-01T00:00:00Z", MIN_TIME),
        ("2199-12-31T23:59:59.999Z", MAX_TIME - timedelta(milliseconds=1)),
        (datetime(2026, 11, 21, 14, 5), NOW),
    ],
)
def test_valid_times_still_parse_to_utc(value: str | datetime, expected: datetime) -> None:
    parsed = parse_time(value, now=NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_datetime_outside_the_range_is_refused() -> None:
    with pytest.raises(InvalidInput, match="start="):
        parse_time(datetime(1, 1, 1, tzinfo=UTC), name="start")


def test_window_names_the_argument_that_is_out_of_range() -> None:
    with pytest.raises(InvalidInput, match="since="):
        parse_window("-99999999999999999999d", None, names=("since", "until"), now=NOW)
    with pytest.raises(InvalidInput, match="until="):
        parse_window(None, "9999-12-31T23:59:59Z", names=("since", "until"), now=NOW)


# ----------------------------------------------------------------------------- through the tools

#: (tool, fixed arguments, time argument names)
TIME_TOOLS = [
    ("search_logs", {}, ("start", "end")),
    ("log_stats", {}, ("start", "end")),
    ("find_orders", {"status": "PENDING"}, ("since", "until")),
    ("query_metrics", {"namespace": "OpsMCP/Services", "metric_name": "ErrorCount"}, ("start", "end")),
]
TOOL_CASES = [
    pytest.param(tool, fixed, arg, value, id=f"{tool}-{arg}-{label}")
    for tool, fixed, args in TIME_TOOLS
    for arg in args
    for label, value in HOSTILE.items()
    if label in ("huge relative days", "year 1", "year 9999", "relative 2^63 seconds", "lone surrogate")
]


@pytest.fixture
async def time_client(fresh_moto, tmp_path):
    """An in-memory client of a server with every toolset that takes a time, on moto."""
    from mcp import Client

    from helpers import make_settings

    from opsmcp.backends.logstore import LogStore
    from opsmcp.server import build_server

    settings = make_settings(fresh_moto, tmp_path, toolsets=["logs", "orders", "metrics"])
    line = '{"timestamp": "2026-11-21T14:00:00Z", "level": "ERROR", "service": "order-processor", "message": "boom"}'
    LogStore(settings.log_store_path).ingest([line], source="test")
    server, _ = build_server(settings)
    async with Client(server) as client:
        yield client


async def test_hostile_times_are_tool_errors_in_every_tool(time_client) -> None:
    """One client for all cases (a server per case would dominate the run time)."""
    failures = []
    for param in TOOL_CASES:
        tool, fixed, arg, value = param.values
        result = await time_client.call_tool(tool, {**fixed, arg: value})
        text = " ".join(getattr(c, "text", "") for c in result.content)
        # A lone surrogate is refused by argument validation (naming the argument) before any
        # time parsing; every other hostile time is refused naming the accepted range.
        names_range = "2200-01-01" in text or (isinstance(value, str) and "\ud800" in value and "unicode" in text)
        if not result.is_error or "Internal error" in text or f"{arg}=" not in text or not names_range:
            failures.append(f"{param.id}: is_error={result.is_error} {text[:200]!r}")
    assert not failures, "\n".join(failures)


def test_iso_formats_datetimes_and_epoch_seconds_alike():
    """One time format: a datetime, a naive one (UTC) and epoch seconds (approval requests,
    DLQ reads) give the same text."""
    from opsmcp.times import iso

    t = datetime(2026, 11, 21, 14, 5, 0, 250_000, tzinfo=UTC)
    assert iso(t) == iso(t.replace(tzinfo=None)) == iso(t.timestamp()) == "2026-11-21T14:05:00.250Z"
    assert iso(t.timestamp(), "seconds") == "2026-11-21T14:05:00Z"
    assert iso(0) == "1970-01-01T00:00:00.000Z" and iso(None) is None
