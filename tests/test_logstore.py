"""The embedded log store (SQLite + FTS5) and the logs toolset.

Store-level tests call :class:`LogStore` directly; toolset-level tests call
:class:`LogTools` methods as plain async functions (the MCP layer is tested elsewhere).
Data: the ops_agent fixture logs (three failure traces whose ids share UUID segments)
and the sandbox scenario's ~12,000 lines.
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsmcp.backends.logstore import SEQ_BITS, LogStore, fts_query, ms_iso, normalize_level
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound, OpsError
from opsmcp.sandbox.scenario import build_scenario
from opsmcp.times import parse_duration
from opsmcp.toolsets.logs import LogTools

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def _line(t: datetime, message: str, **fields: object) -> str:
    doc = {"@timestamp": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "message": message}
    doc.update({"level": "INFO", "service": "svc"} | fields)
    return json.dumps(doc)


def _fixture_jsonl(fixtures_dir: Path, out: Path, now: datetime) -> list[dict]:
    """The fixture's JSON array as JSON Lines with @timestamp = now - seconds_before_load."""
    docs = json.loads((fixtures_dir / "logs.json").read_text())
    with out.open("w") as fh:
        for doc in docs:
            d = dict(doc)
            d["@timestamp"] = (now - timedelta(seconds=d.pop("seconds_before_load"))).isoformat()
            fh.write(json.dumps(d) + "\n")
    return docs


@pytest.fixture(scope="module")
def scenario():
    return build_scenario(now=NOW)


@pytest.fixture(scope="module")
def scenario_store(tmp_path_factory, scenario) -> LogStore:
    """A store holding the sandbox scenario's log lines (read-only afterwards)."""
    path = tmp_path_factory.mktemp("scenario") / "logs.db"
    report = LogStore(path).ingest((line.to_json() for line in scenario.log_lines()), source="scenario")
    assert report.bad == 0 and report.loaded > 10_000
    store = LogStore(path, readonly=True)
    yield store
    store.close()


@pytest.fixture(scope="module")
def tools(scenario_store) -> LogTools:
    return LogTools(Settings(log_store=scenario_store.path), store=scenario_store)


# --------------------------------------------------------------------------- fixture traces


def test_fixture_traces_exact_via_cli(tmp_path, fixtures_dir):
    from opsmcp.cli import main

    now = datetime.now(UTC)
    docs = _fixture_jsonl(fixtures_dir, tmp_path / "logs.jsonl", now)
    db = tmp_path / "logs.db"
    assert main(["logs", "load", "--store", str(db), "--quiet", str(tmp_path / "logs.jsonl")]) == 0
    store = LogStore(db, readonly=True)
    ids = sorted({d["trace_id"] for d in docs})
    assert len(ids) == 3
    # The ids share UUID segments ("4d47-84b0-9d3247266..."): a tokenizing match would mix them.
    assert len({tuple(i.split("-")[2:4]) for i in ids}) < 3
    for tid in ids:
        expected = sorted((d for d in docs if d["trace_id"] == tid), key=lambda d: -d["seconds_before_load"])
        tr = store.get_trace(tid)
        assert tr.line_count == len(expected)
        assert [r.trace_id for r in tr.lines] == [tid] * len(expected)
        assert [r.message for r in tr.lines] == [d["message"] for d in expected]
        assert tr.services == list(dict.fromkeys(d["service"] for d in expected))
        assert tr.first_error is not None and tr.first_error.level == "ERROR"
        assert tr.first_error.message == next(d["message"] for d in expected if d["level"] == "ERROR")
        page = store.search(trace_id=tid, limit=100)
        assert page.total == len(expected) and {h.trace_id for h in page.hits} == {tid}
    assert sorted(len(store.get_trace(t).lines) for t in ids) == [4, 6, 7]
    # a segment that two ids share is not a trace id
    with pytest.raises(NotFound):
        store.get_trace("4d47-84b0-9d3247266382")
    store.close()


async def test_fixture_traces_via_toolset(tmp_path, fixtures_dir):
    now = datetime.now(UTC)
    docs = _fixture_jsonl(fixtures_dir, tmp_path / "logs.jsonl", now)
    db = tmp_path / "logs.db"
    LogStore(db).load_files([str(tmp_path / "logs.jsonl")])
    tools = LogTools(Settings(log_store=db, data_dir=tmp_path))
    for tid in {d["trace_id"] for d in docs}:
        result = await tools.get_trace(tid)
        assert result.line_count == sum(d["trace_id"] == tid for d in docs)
        assert {line.trace_id for line in result.lines} == {tid}
        assert result.first_error is not None
        hits = await tools.search_logs(trace_id=tid)
        assert hits.total == result.line_count
    tools.store.close()


# --------------------------------------------------------------------------- ingest


def test_bad_lines_counted_with_numbers(tmp_path):
    t = NOW - timedelta(minutes=5)
    lines = [
        _line(t, "good one"),                                   # 1
        "{not json",                                            # 2
        json.dumps({"@timestamp": t.isoformat(), "level": "INFO"}),  # 3 no message
        json.dumps({"@timestamp": "yesterday-ish", "message": "m"}),  # 4 bad timestamp
        "[1, 2, 3]",                                            # 5 not an object
        "",                                                     # 6 blank
        _line(t + timedelta(seconds=1), "good two", level="warning"),  # 7
        json.dumps({"message": "no time"}),                     # 8 no timestamp
        '"just a string"',                                      # 9 not an object
        _line(t + timedelta(seconds=2), "good three"),          # 10
    ]
    store = LogStore(tmp_path / "logs.db")
    report = store.ingest(lines, source="app.jsonl", batch_size=3)
    assert report.loaded == 3 and report.bad == 6 and report.blank == 1
    got = {(b.source, b.line): b.reason for b in report.bad_lines}
    assert set(got) == {("app.jsonl", n) for n in (2, 3, 4, 5, 8, 9)}
    assert "invalid JSON" in got[("app.jsonl", 2)]
    assert "message" in got[("app.jsonl", 3)]
    assert "timestamp" in got[("app.jsonl", 4)]
    assert "not a JSON object" in got[("app.jsonl", 5)]
    assert "timestamp" in got[("app.jsonl", 8)]
    assert "app.jsonl:2:" in report.summary() and "bad lines: 6" in report.summary()
    assert store.count() == 3
    assert store.levels() == {"INFO": 2, "WARN": 1}


def test_bad_utf8_and_files_with_progress(tmp_path, capsys):
    t = NOW - timedelta(minutes=5)
    f = tmp_path / "mixed.jsonl"
    f.write_bytes((_line(t, "ok") + "\n").encode() + b'{"message": "\xff\xfe"}\n' + (_line(t, "ok 2") + "\n").encode()
                  + b'{"@timestamp": "2026-11-21T14:00:00Z", "message": "lone \\ud800 surrogate"}\r\n'
                  + b'{"@timestamp": "2026-11-21T14:00:00Z", "message": "emoji \\ud83d\\ude00 pair and caf\xc3\xa9"}\n')
    store = LogStore(tmp_path / "logs.db")
    report = store.load_files([str(f)], show_progress=True)
    assert report.loaded == 3 and report.bad == 2
    assert report.bad_lines[0].line == 2 and "UTF-8" in report.bad_lines[0].reason
    assert report.bad_lines[1].line == 4 and "surrogate" in report.bad_lines[1].reason
    assert store.search("emoji").hits[0].message == "emoji \U0001f600 pair and caf\u00e9"
    assert report.bytes_read == f.stat().st_size
    with pytest.raises(NotFound, match=r"no-such\.jsonl"):
        store.load_files([str(tmp_path / "no-such.jsonl")])


def test_stdin_load(tmp_path, monkeypatch):
    t = NOW - timedelta(minutes=1)
    data = "\n".join(_line(t + timedelta(seconds=i), f"stdin line {i}") for i in range(25)) + "\nnope\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    store = LogStore(tmp_path / "logs.db")
    report = store.load_files(["-"])
    assert (report.loaded, report.bad, report.sources) == (25, 1, ["-"])
    assert report.bad_lines[0].source == "-" and report.bad_lines[0].line == 26
    assert store.search("stdin").total == 25


def test_field_aliases_levels_and_doc_kept(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    lines = [
        json.dumps({"time": 1_763_000_000_123, "msg": "pino style", "level": 50, "app": "node-api", "traceId": "t-1",
                    "x": 1}),
        json.dumps({"timestamp": "2026-11-21T10:00:00+02:00", "message": "offset", "severity": "warning",
                    "service": "a"}),
        json.dumps({"@timestamp": "2026-11-21T08:00:00", "message": "naive is UTC", "level": "error", "service": "a",
                    "nested": {"k": [1, 2]}}),
    ]
    assert store.ingest(lines).loaded == 3
    hits = {h.message: h for h in store.search(limit=10, include_doc=True).hits}
    assert hits["pino style"].level == "ERROR" and hits["pino style"].service == "node-api"
    assert hits["pino style"].trace_id == "t-1" and hits["pino style"].timestamp == ms_iso(1_763_000_000_123)
    assert hits["offset"].level == "WARN" and hits["offset"].timestamp == "2026-11-21T08:00:00.000Z"
    assert hits["naive is UTC"].timestamp == "2026-11-21T08:00:00.000Z"
    assert json.loads(hits["naive is UTC"].doc)["nested"] == {"k": [1, 2]}
    assert hits["naive is UTC"].fields() == {"nested": {"k": [1, 2]}}
    assert normalize_level("Warning") == "WARN" and normalize_level(" info ") == "INFO"


COMMON_SHAPES = [
    {"@timestamp": "2026-11-21T10:00:00Z", "logger": "com.shop.Orders", "msg": "logger names the service"},
    {"timestamp": "2026-11-21T10:00:01Z", "svc": "billing", "message": "svc", "severity": "ERR", "traceId": "t-9"},
    {"ts": 1_795_269_600, "service": {"name": "otel-svc"}, "message": "otel", "trace.id": "t-8", "eventId": "e"},
    {"time": "2026-11-21T10:00:03Z", "app": "node", "msg": "app", "level": 30},
    {"@timestamp": "2026-11-21T10:00:04Z", "message": "nothing else"},
]


def test_common_field_names_map_to_ours_in_both_loaders(tmp_path):
    """`logs load` (embedded) and `logs load --to opensearch` read the same names the same way."""
    from opsmcp.backends.logstore import standard_fields

    store = LogStore(tmp_path / "logs.db")
    assert store.ingest([json.dumps(d) for d in COMMON_SHAPES]).loaded == len(COMMON_SHAPES)
    stored = {h.message: (h.ts_ms, h.service, h.level, h.message, h.trace_id, h.event_id)
              for h in store.search(limit=10).hits}
    assert stored == {standard_fields(d)[3]: standard_fields(d) for d in COMMON_SHAPES}
    assert stored["logger names the service"][1] == "com.shop.Orders"
    assert stored["svc"][1:3] == ("billing", "ERROR") and stored["svc"][4] == "t-9"
    assert stored["otel"][1] == "otel-svc" and stored["otel"][4:] == ("t-8", "e")
    assert stored["app"][1:3] == ("node", "INFO") and stored["nothing else"][1:3] == ("unknown", "UNKNOWN")


def test_same_millisecond_reloaded_keeps_every_line(tmp_path):
    """Ids are (ms << 20 | seq); a reload whose seq wraps onto stored ids gets fresh ones."""
    t = NOW - timedelta(minutes=1)
    lines = [_line(t, f"same ms {i}") for i in range(5)]
    store = LogStore(tmp_path / "logs.db")
    store.ingest(lines)
    with sqlite3.connect(store.path) as raw:  # force the clash: restart the sequence
        raw.execute("UPDATE meta SET value=0 WHERE key='next_seq'")
    report = store.ingest(lines)
    assert report.loaded == 5 and store.count() == 10
    assert store.search("same").total == 10


def test_reset_empties_the_store(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    store.ingest([_line(NOW, "to be deleted")])
    store.reset()
    assert store.count() == 0 and store.services() == {} and store.search("deleted").total == 0
    assert store.time_bounds() is None


# --------------------------------------------------------------------------- search


def test_fts_syntax_errors_are_invalid_input(scenario_store):
    for bad in ['"unterminated', "AND OR", "foo(", "timeout AND", "NOT"]:
        with pytest.raises(InvalidInput) as exc:
            scenario_store.search(bad)
        text = str(exc.value)
        assert repr(bad) in text and '"connection timeout"' in text and "sqlite" not in text.lower()


def test_fts_query_forms(scenario_store):
    s = scenario_store
    timeout = s.search("timeout", limit=500)
    assert timeout.total > 0 and all("timeout" in h.message.lower() for h in timeout.hits)
    phrase = s.search('"connection timeout"', limit=500)
    assert 0 < phrase.total <= timeout.total
    assert all("connection timeout" in h.message.lower() for h in phrase.hits)
    not_db = s.search("timeout NOT database", limit=500)
    assert not_db.total == timeout.total - phrase.total
    assert all("database" not in h.message.lower() for h in not_db.hits)
    prefix = s.search("timeo*", limit=1)
    assert prefix.total >= timeout.total
    either = s.search("declined OR shipped")
    both = s.search("declined AND shipped").total
    assert either.total == s.search("declined").total + s.search("shipped").total - both
    # punctuation is quoted for the user, not a syntax error
    assert s.search("orders-db.cluster:5432").total == phrase.total
    assert s.search("gw.paynet*").total > 0
    assert fts_query("orders-db.cluster:5432") == '"orders-db.cluster:5432"'
    assert fts_query('a AND "b c" OR d*') == 'a AND "b c" OR d*'


def test_search_filters_order_and_pages(scenario_store):
    s = scenario_store
    errors = s.search(level="error", limit=500)
    assert errors.total == s.levels()["ERROR"] and errors.total_exact
    ts = [h.id for h in errors.hits]
    assert ts == sorted(ts, reverse=True)  # newest first
    combined = s.search("timeout", service="order-processor", level="ERROR", limit=500)
    assert combined.total > 0 and {(h.service, h.level) for h in combined.hits} == {("order-processor", "ERROR")}
    several = s.search(level=["warn", "ERROR"], limit=1)
    assert several.total == s.levels()["WARN"] + s.levels()["ERROR"]
    svc = s.search(service="payment-service", limit=1)
    assert svc.total == s.services()["payment-service"]
    seen, cursor = [], None
    while True:
        page = s.search("timeout", limit=7, cursor=cursor)
        seen += [h.id for h in page.hits]
        assert page.total == s.search("timeout").total
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == s.search("timeout").total
    for bad in ("not-hex", "-99999999999999999999d", "0", "8" + "0" * 15):  # unreadable, or no SQLite row id
        with pytest.raises(InvalidInput, match="Cannot read cursor"):
            s.search(cursor=bad)


def test_fulltext_with_filters_matches_brute_force(scenario_store):
    """Service/level filters are applied inside the FTS index (tag terms): same answers as
    filtering every matching line."""
    s = scenario_store
    everything = s.search(limit=100_000).hits
    cases = [("timeout", "order-processor", None), ("order", "payment-service", "ERROR"),
             ("order", None, ["WARN", "ERROR"]), ("declined OR shipped", "order-cancellation", "error"),
             ("ORDER_CREATED", "order-processor", "INFO"), ("timeout", "no-such-service", None)]
    for query, service, level in cases:
        words = query.lower().replace("_", " ").split(" or ")
        levels = {level.upper()} if isinstance(level, str) else set(level or [])

        def matches(h, words=words) -> bool:
            text = h.message.lower().replace("_", " ").replace("-", " ")
            return any(all(w in text.split() for w in alt.split()) for alt in words)

        expected = [h.id for h in everything if matches(h) and (service is None or h.service == service)
                    and (not levels or h.level in levels)]
        page = s.search(query, service=service, level=level, limit=500)
        assert page.total == len(expected), (query, service, level)
        assert [h.id for h in page.hits] == expected[:500]
    with pytest.raises(InvalidInput, match="unbalanced parentheses"):
        s.search("timeout) OR (shipped", service="payment-service")


def test_time_windows_and_counts(scenario_store, scenario):
    s = scenario_store
    start, end = scenario.incident_start, NOW
    in_window = s.search(start=start, end=end, limit=1)
    everything = s.count()
    before = s.search(end=start - timedelta(milliseconds=1), limit=1)
    assert in_window.total + before.total == everything
    # counts from rollups + ragged edges equal counts from the lines themselves
    raw = s._read(lambda c: c.execute("SELECT count(*) FROM logs WHERE ts BETWEEN ? AND ?",
                                      (int(start.timestamp() * 1000), int(end.timestamp() * 1000))).fetchone()[0])
    assert in_window.total == raw
    odd = s.search(start=start + timedelta(seconds=17, milliseconds=3), end=end - timedelta(minutes=41, seconds=7),
                   level="INFO", limit=1)
    lo, hi = int((start + timedelta(seconds=17, milliseconds=3)).timestamp() * 1000), int(
        (end - timedelta(minutes=41, seconds=7)).timestamp() * 1000)
    assert odd.total == s._read(lambda c: c.execute(
        "SELECT count(*) FROM logs WHERE level='INFO' AND ts BETWEEN ? AND ?", (lo, hi)).fetchone()[0])
    inside = s.search(start=start, end=end, limit=200).hits
    assert all(start <= datetime.fromisoformat(h.timestamp) <= end for h in inside)


def test_error_lines(scenario_store, scenario):
    traces = [*list(scenario.failing_traces)[:5], "no-such-trace"]
    lines = scenario_store.error_lines(traces)
    assert set(lines) == set(traces[:5])
    for tid in traces[:5]:
        expected = [ln for ln in scenario.failing_traces[tid] if ln.level == "ERROR"]
        assert [e["message"] for e in lines[tid]] == [ln.message for ln in expected]
        assert [e["timestamp"] for e in lines[tid]] == sorted(e["timestamp"] for e in lines[tid])
    assert scenario_store.error_lines(traces, per_trace=1) == {t: v[:1] for t, v in lines.items()}


# --------------------------------------------------------------------------- stats


def test_stats_buckets_sum_to_totals_and_find_onset(scenario_store, scenario):
    s = scenario_store
    start, end = NOW - timedelta(hours=6), NOW
    stats = s.stats(start, end, "level", 300)
    assert sum(g.total for g in stats.groups) == stats.total == s.search(start=start, end=end, limit=1).total
    for g in stats.groups:
        assert sum(g.counts) == g.total == s.search(level=g.key, start=start, end=end, limit=1).total
    assert stats.bucket_starts_ms[0] % 300_000 == 0
    first_error = min(ln.timestamp for tr in scenario.failing_traces.values() for ln in tr if ln.level == "ERROR")
    assert first_error >= scenario.incident_start
    errors = next(g for g in stats.groups if g.key == "ERROR")
    onset = next(i for i, n in enumerate(errors.counts) if n)
    bucket = datetime.fromtimestamp(stats.bucket_starts_ms[onset] / 1000, UTC)
    assert bucket <= first_error < bucket + timedelta(minutes=5)
    assert errors.first_ms == int(first_error.timestamp() * 1000)
    # per service, the same total; a ragged window equals the raw count
    by_service = s.stats(start + timedelta(seconds=7), end - timedelta(seconds=11), "service", 900, level="ERROR")
    assert {g.key for g in by_service.groups} <= set(s.services())
    assert by_service.total == s.search(level="ERROR", start=start + timedelta(seconds=7),
                                        end=end - timedelta(seconds=11), limit=1).total
    fine = s.stats(scenario.incident_start, scenario.incident_start + timedelta(minutes=10), "level", 7)
    assert fine.interval_ms == 7000 and fine.total == s.search(
        start=scenario.incident_start, end=scenario.incident_start + timedelta(minutes=10), limit=1).total


async def test_log_stats_tool_onset_and_clamps(tools, scenario):
    result = await tools.log_stats(start="2026-11-21T09:00:00Z", end="2026-11-21T15:00:00Z", interval="5m")
    assert result.interval_seconds == 300 and len(result.bucket_starts) == len(result.groups[0].counts)
    errors = next(g for g in result.groups if g.key == "ERROR")
    first_error = min(ln.timestamp for tr in scenario.failing_traces.values() for ln in tr if ln.level == "ERROR")
    onset = datetime.fromisoformat(errors.rise_at)
    assert onset <= first_error < onset + timedelta(minutes=5)
    assert next(g for g in result.groups if g.key == "INFO").rise_at is None
    assert result.total == sum(g.total for g in result.groups)
    wide = await tools.log_stats(start="2026-10-01T00:00:00Z", end="2026-11-21T15:00:00Z", interval=60)
    assert any("clamped" in n for n in wide.notes)  # > 31 days, and beyond the stored logs
    assert any("widened" in n for n in wide.notes) and len(wide.bucket_starts) <= 240
    default = await tools.log_stats(group_by="service")
    assert default.total > 0 and len(default.bucket_starts) <= 60
    with pytest.raises(InvalidInput, match="reversed"):
        await tools.log_stats(start="2026-11-21T15:00:00Z", end="2026-11-21T14:00:00Z")
    with pytest.raises(InvalidInput):
        await tools.log_stats(interval="soon")
    assert parse_duration("5m") == 300 and parse_duration(90) == 90 and parse_duration("1h") == 3600


# --------------------------------------------------------------------------- toolset


async def test_search_logs_tool_bounds_and_labels(tools):
    result = await tools.search_logs(limit=9999)
    assert result.returned <= 500 and any("clamped to 500" in n for n in result.notes)
    assert result.truncated and result.next_cursor
    assert len(result.model_dump_json()) <= tools.settings.max_result_bytes
    small = await tools.search_logs(query="timeout", level="error", limit=3)
    assert small.returned == 3 and small.total > 3 and small.next_cursor
    assert small.hits[0].fields is None
    more = await tools.search_logs(query="timeout", level="error", limit=3, cursor=small.next_cursor)
    assert not {h.timestamp + h.message for h in small.hits} & {h.timestamp + h.message for h in more.hits} or \
        small.hits[-1].timestamp >= more.hits[0].timestamp
    with_fields = await tools.search_logs(query="POST", limit=1, include_fields=True)
    assert with_fields.hits[0].fields and "duration_ms" in with_fields.hits[0].fields
    with pytest.raises(InvalidInput, match="reversed"):
        await tools.search_logs(start="-1h", end="-2h")
    with pytest.raises(InvalidInput, match="Cannot parse the full-text query"):
        await tools.search_logs(query='"unterminated')


async def test_unknown_service_and_level_list_known_ones(tools):
    result = await tools.search_logs(service="order-proc")
    assert result.total == 0 and result.hits == []
    assert "order-processor" in result.notes[0] and "did you mean" in result.notes[0]
    result = await tools.search_logs(level="EROR")
    assert result.total == 0 and "'ERROR'" in result.notes[0] and "INFO" in result.notes[0]
    stats = await tools.log_stats(service="nope")
    assert stats.total == 0 and "Known services" in " ".join(stats.notes)


async def test_get_trace_tool_and_unknown_trace(tools, scenario):
    tid = next(iter(scenario.failing_traces))
    result = await tools.get_trace(tid)
    expected = scenario.failing_traces[tid]
    assert result.line_count == len(expected) and [ln.message for ln in result.lines] == [ln.message for ln in expected]
    assert result.first_error.message == next(ln.message for ln in expected if ln.level == "ERROR")
    assert result.duration_ms == int((expected[-1].timestamp - expected[0].timestamp).total_seconds() * 1000)
    with pytest.raises(NotFound) as exc:
        await tools.get_trace(tid[:8] + "-0000-0000-0000-000000000000")
    assert tid in str(exc.value)
    upper = await tools.get_trace(tid.upper())
    assert upper.trace_id == tid and upper.notes
    errors = await tools.error_lines([tid])
    assert [e["message"] for e in errors[tid]] == [ln.message for ln in expected if ln.level == "ERROR"]


def test_tool_marks():
    from opsmcp.toolsets.base import marked_tools

    marks = {name: mark for name, _, mark in marked_tools(LogTools(Settings(log_store=Path("/nonexistent/x.db"))))}
    assert set(marks) == {"search_logs", "get_trace", "log_stats", "log_patterns"}
    assert all(m.read_only and m.idempotent and not m.open_world and not m.write for m in marks.values())


# --------------------------------------------------------------------------- files and concurrency


def test_missing_store_is_not_created(tmp_path):
    path = tmp_path / "sub" / "logs.db"
    for store in (LogStore(path, readonly=True), LogStore(path)):
        with pytest.raises(NotFound) as exc:
            store.search("x")
        assert str(path) in str(exc.value) and "opsmcp logs load" in str(exc.value)
        with pytest.raises(NotFound):
            store.services()
    assert not path.exists()


async def test_missing_store_is_a_tool_error(tmp_path):
    tools = LogTools(Settings(log_store=tmp_path / "none.db"))
    with pytest.raises(NotFound, match="opsmcp logs load"):
        await tools.search_logs(query="x")


def test_corrupt_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(OpsError) as exc:
        LogStore(junk, readonly=True).search()
    assert str(junk) in str(exc.value) and "sqlite" not in type(exc.value).__name__.lower()
    with pytest.raises(OpsError, match=r"junk\.db"):
        LogStore(junk).ingest([_line(NOW, "x")])
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE t(x)")
    with pytest.raises(OpsError, match="not an opsmcp log store"):
        LogStore(foreign).count()
    with pytest.raises(OpsError, match="not an opsmcp log store"):  # a load never writes into it
        LogStore(foreign).ingest([_line(NOW, "x")])
    with sqlite3.connect(foreign) as raw:
        assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master")] == ["t"]


def test_readers_see_whole_batches_during_a_load(tmp_path):
    """WAL: a reader never waits for the loader and sees lines, FTS entries and counts
    of whole batches only, both between batches and while a write is in flight."""
    path = tmp_path / "logs.db"
    writer = LogStore(path)
    writer.ingest([_line(NOW - timedelta(hours=1), "seed tick")])
    reader = LogStore(path, readonly=True)

    def snapshot() -> tuple[int, int, int, int]:
        return reader._read(lambda c: (
            c.execute("SELECT count(*) FROM logs").fetchone()[0],
            c.execute("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'tick'").fetchone()[0],
            c.execute("SELECT sum(n) FROM rollup_1m WHERE service = '*' AND level = '*'").fetchone()[0],
            c.execute("SELECT sum(n) FROM facets WHERE kind='level'").fetchone()[0],
        ))

    seen: list[tuple[int, int, int, int]] = []

    def check(_read: int) -> None:  # runs in the loader between batches: read from another thread
        t = threading.Thread(target=lambda: seen.append(snapshot()))
        t.start()
        t.join()

    lines = [_line(NOW - timedelta(minutes=50) + timedelta(milliseconds=i * 37), f"tick {i}") for i in range(4000)]
    report = writer.ingest(lines, batch_size=500, on_progress=check)
    assert report.loaded == 4000
    assert [s[0] for s in seen] == [1 + 500 * k for k in range(1, 9)]
    sums = reader._read(lambda c: [c.execute(f"SELECT sum(n) FROM {t} WHERE {w}").fetchone()[0]
                                   for t in ("rollup_1m", "rollup_15m")
                                   for w in ("service != '*' AND level != '*'", "service = '*' AND level != '*'",
                                             "service != '*' AND level = '*'", "service = '*' AND level = '*'")])
    assert sums == [4001] * 8
    assert all(len(set(s)) == 1 for s in seen)  # lines == FTS entries == rollup == facets

    # a write transaction in flight (not committed) is invisible and does not block readers
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("INSERT INTO logs(id, service, level, message, doc) VALUES (?, 's', 'INFO', 'x', '{}')",
                ((int(NOW.timestamp() * 1000) << SEQ_BITS) | 99,))
    assert snapshot() == (4001,) * 4
    raw.execute("ROLLBACK")
    raw.close()
    reader.close()


def test_concurrent_readers_from_many_threads(scenario_store):
    expected = scenario_store.search("timeout").total
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(scenario_store.search("timeout", level="ERROR").total)
                results.append(scenario_store.search("timeout").total)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and expected in results and len(results) == 320
    assert set(results) == {expected, scenario_store.search("timeout", level="ERROR").total}
    # threads that come and go (like anyio's workers) borrow pooled connections: no leak
    for _ in range(30):
        t = threading.Thread(target=lambda: scenario_store.count())
        t.start()
        t.join()
    from opsmcp.backends.logstore import MAX_IDLE_READERS

    assert len(scenario_store._idle) <= MAX_IDLE_READERS


# --------------------------------------------------------------------------- through MCP


@pytest.fixture
async def mcp_client(tmp_path, scenario_store):
    """An in-memory MCP client of build_server with the logs toolset on the scenario store."""
    from mcp import Client

    from opsmcp.server import build_server

    settings = Settings(toolsets=["logs"], data_dir=tmp_path, log_store=scenario_store.path)
    server, _ = build_server(settings)
    async with Client(server) as client:
        yield client


async def test_tools_over_mcp(mcp_client, scenario):
    from helpers import ToolFailed, call

    listed = {t.name: t for t in (await mcp_client.list_tools()).tools}
    assert {"search_logs", "get_trace", "log_stats"} <= set(listed)
    for name in ("search_logs", "get_trace", "log_stats"):
        tool = listed[name]
        assert tool.output_schema and tool.annotations.read_only_hint and tool.annotations.idempotent_hint
        assert tool.annotations.open_world_hint is False and len(tool.description) < 500
    tid = next(iter(scenario.failing_traces))
    trace = await call(mcp_client, "get_trace", trace_id=tid)
    assert trace["line_count"] == len(scenario.failing_traces[tid])
    found = await call(mcp_client, "search_logs", query="timeout", level="ERROR", limit=5)
    assert found["returned"] == 5 and found["next_cursor"]
    stats = await call(mcp_client, "log_stats", start="-6h", interval="15m")
    assert stats["interval_seconds"] == 900
    with pytest.raises(ToolFailed, match="Cannot parse the full-text query"):
        await call(mcp_client, "search_logs", query="foo(")
    with pytest.raises(ToolFailed, match="No log lines with trace_id"):
        await call(mcp_client, "get_trace", trace_id="nope")
    unknown = await call(mcp_client, "search_logs", service="order-proc")
    assert unknown["total"] == 0 and "order-processor" in unknown["notes"][0]


# --------------------------------------------------------------------------- hostile arguments (issue 8 E)


HOSTILE = [
    ("search_logs", {"query": "\ud800"}),
    ("search_logs", {"query": "timeout \udfff"}),
    ("search_logs", {"service": "\ud800"}),
    ("search_logs", {"level": "\ud800"}),
    ("search_logs", {"trace_id": "a\ud800"}),
    ("get_trace", {"trace_id": "\ud800"}),
    ("log_stats", {"service": "\ud800"}),
    ("log_stats", {"level": "ERROR,\ud800"}),
]


async def test_lone_surrogates_are_clear_tool_errors(mcp_client, tools):
    """Over MCP the SDK's argument validation refuses them first (naming the argument); called
    directly (another toolset, a future transport), the toolset refuses them before any engine."""
    for tool, args in HOSTILE:
        result = await mcp_client.call_tool(tool, args)
        text = " ".join(getattr(c, "text", "") for c in result.content)
        assert result.is_error and "Internal error" not in text, (tool, args)
        assert next(iter(args)) in text and ("surrogate" in text or "unicode" in text), text
        with pytest.raises(InvalidInput, match="unpaired UTF-16 surrogate"):
            await getattr(tools, tool)(**args)


async def test_huge_interval_is_clamped_not_an_internal_error(mcp_client):
    from helpers import call

    out = await call(mcp_client, "log_stats", start="-6h", interval=9223372036854775808)
    assert any("longer than the longest window" in n for n in out["notes"])
    assert out["total"] == sum(g["total"] for g in out["groups"]) and len(out["bucket_starts"]) >= 1
    out = await call(mcp_client, "log_stats", start="-6h", interval="99999999999999999999d")
    assert any("longer than the longest window" in n for n in out["notes"])


async def test_overlong_free_text_arguments_are_refused(mcp_client):
    for tool, args in (("search_logs", {"query": "x" * 1001}), ("search_logs", {"service": "s" * 201}),
                       ("search_logs", {"cursor": "c" * 8193}), ("get_trace", {"trace_id": "t" * 201}),
                       ("log_stats", {"interval": "5m" + " " * 40}), ("search_logs", {"start": "-" * 65})):
        result = await mcp_client.call_tool(tool, args)
        assert result.is_error, (tool, args)
    listed = {t.name: t.input_schema for t in (await mcp_client.list_tools()).tools}

    def strings_bounded(schema: dict) -> bool:
        if schema.get("type") == "string":
            return "maxLength" in schema or "enum" in schema
        return all(strings_bounded(s) for s in schema.get("anyOf", []))

    for name in ("search_logs", "get_trace", "log_stats", "log_patterns"):
        for arg, schema in listed[name]["properties"].items():
            assert strings_bounded(schema), f"{name}.{arg} has no maxLength"


async def test_empty_service_and_level_mean_no_filter(tools):
    everything = await tools.search_logs(limit=1)
    for args in ({"service": ""}, {"level": ""}, {"service": " ", "level": ""}, {"query": ""}, {"trace_id": ""}):
        out = await tools.search_logs(limit=1, **args)
        assert out.total == everything.total, args
        assert any("treated as no" in n for n in out.notes), args
    stats = await tools.log_stats(start="-6h", service="", level="")
    plain = await tools.log_stats(start="-6h")
    assert stats.total == plain.total and any("treated as no" in n for n in stats.notes)


# --------------------------------------------------------------------------- log_patterns (issue 14)


async def test_log_patterns_names_the_incident_templates_as_new(tools, scenario):
    out = await tools.log_patterns(start=scenario.incident_start.isoformat(), end=NOW.isoformat(), limit=100)
    by_template = {p.template: p for p in out.patterns}
    db = by_template["Database connection timeout after <NUM>ms (<HOST>)"]
    assert db.status == "new" and db.services == ["order-processor"] and db.baseline_count == 0
    assert db.sample_trace_id in scenario.failing_traces
    gateway = next(p for t, p in by_template.items() if t.startswith("Payment gateway"))
    assert gateway.status == "new"
    statuses = [p.status for p in out.patterns]
    assert statuses == sorted(statuses, key=["new", "grew", "steady"].index)  # new first, then grew, then steady
    assert by_template["Processing order <UUID>"].status == "steady"
    assert out.lines == out.lines_mined == sum(p.count for p in out.patterns)
    assert out.baseline_end == out.start and len(out.model_dump_json()) < 60_000


async def test_log_patterns_samples_big_windows_and_says_so(tools, scenario, monkeypatch):
    from opsmcp.analysis import log_patterns as lp

    monkeypatch.setattr(lp, "MAX_MINED_LINES", 1_000)
    monkeypatch.setattr(lp.window_lines, "__defaults__", (1_000,))
    out = await tools.log_patterns(start=(NOW - timedelta(hours=6)).isoformat(), end=NOW.isoformat(),
                                   compare_to="none")
    assert out.lines > 10_000 and out.lines_mined == 1_000
    assert any("mined a sample of 1,000" in n for n in out.notes)
    assert all(p.status is None and p.baseline_count is None for p in out.patterns)
    assert abs(sum(p.count for p in out.patterns) - out.lines) < out.lines * 0.05 + 100


def test_doc_keeps_only_the_other_fields(tmp_path):
    """The ``doc`` column stores the line minus its indexed fields (store ≤ 1.5x the JSONL);
    a lone surrogate escape in an extra field is kept escaped rather than breaking the load."""
    store = LogStore(tmp_path / "logs.db")
    lines = [json.dumps({"@timestamp": "2026-11-21T10:00:00Z", "message": "m1", "service": "a", "level": "INFO",
                         "trace_id": "t", "event_id": "e", "host": "h1", "n": 1}),
             '{"@timestamp": "2026-11-21T10:00:01Z", "message": "m2", "odd": "\\ud800x"}',
             json.dumps({"@timestamp": "2026-11-21T10:00:02Z", "message": "m3", "caf\u00e9": "cr\u00e8me"},
                        ensure_ascii=False)]
    assert store.ingest(lines).loaded == 3
    hits = {h.message: h for h in store.search(limit=10, include_doc=True).hits}
    assert hits["m1"].doc == '{"host":"h1","n":1}' and hits["m1"].fields() == {"host": "h1", "n": 1}
    assert hits["m2"].fields() == {"odd": "\ud800x"} and hits["m2"].doc.isascii()
    assert hits["m3"].doc == '{"café":"crème"}'
    bare = LogStore(tmp_path / "bare.db")
    bare.ingest([json.dumps({"@timestamp": "2026-11-21T10:00:00Z", "message": "only indexed fields"})])
    assert bare.search(include_doc=True).hits[0].doc == ""
