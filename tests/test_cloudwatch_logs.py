"""The CloudWatch Logs backend beyond the behavioural module (tests/test_log_backends.py).

- Logs Insights requests pinned (moto runs only fields/sort/limit of Insights): the query
  strings as pure functions, and the StartQuery / GetQueryResults / StopQuery calls each
  tool makes, through botocore's Stubber (which also checks every request against the
  service model); the byte cap, the time bound and a cancelled call each stop the query.
- Hostile arguments: no value can add a pipe command, a comment or end a literal, and the
  escaped regex still matches exactly the value (hypothesis over arbitrary text).
- The embedded sandbox with ``OPSMCP_LOG_BACKEND=cloudwatch``: its incident's root cause
  comes out of ``analyze_dlq`` exactly as on the embedded store.
- ``opsmcp logs load --to cloudwatch`` (batches, idempotence), ``opsmcp doctor``, /metrics.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any
from unittest.mock import patch

import anyio
import pytest
from botocore.stub import Stubber
from helpers import call, make_settings
from hypothesis import given, settings as hsettings, strategies as st
from mcp import Client

from opsmcp.backends import fulltext
from opsmcp.backends.aws import AwsClients
from opsmcp.backends.cloudwatch_logs import CloudWatchLogs, query_mode
from opsmcp.backends.cloudwatch_logs import query as q
from opsmcp.backends.cloudwatch_logs.load import MAX_BATCH_BYTES, batches
from opsmcp.cli import main
from opsmcp.config import Settings
from opsmcp.errors import BackendUnavailable, InvalidInput
from opsmcp.toolsets.logs import LogTools

pytestmark = pytest.mark.anyio
F = q.Fields()
T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
TID = "ce79cdee-0e35-4d47-84b0-9d3247266382"
HOSTILE = ['x" | stats count(*) by @log', "a/ | filter 1=1 | display @message #", "`@message`", "a\nfields x",
           "\\/\\|", "' or 1=1 --", "ünïcødé/|#", "|", "/", "#", "x\\", "\u2028|\u0000", "a" * 5000,
           "$(reboot)", "%s%n", "{ $.level = \"ERROR\" }"]


# --------------------------------------------------------------------------- query text


def test_search_query_is_pinned():
    tree = fulltext.parse('"connection timeout" OR gateway NOT retry')
    assert q.search_query(F, tree=tree, service="order-processor", levels=["ERROR", "WARN"], trace_ids=[TID],
                          limit=51) == (
        "fields @timestamp, @message, @log, @logStream, @ptr, coalesce(message, @message) as opsmcp_text"
        " | filter service =~ /^(order-processor)$/"
        " and level =~ /(?i)^(ERROR|ERR|WARN|WARNING)$/"
        " and trace_id =~ /^(ce79cdee-0e35-4d47-84b0-9d3247266382)$/"
        r" and (opsmcp_text =~ /(?i)\bconnection\W+timeout\b/ or (opsmcp_text =~ /(?i)\bgateway\b/"
        r" and not opsmcp_text =~ /(?i)\bretry\b/))"
        " | sort @timestamp desc | limit 51")
    assert q.search_query(F, limit=10**9).endswith("| limit 10000")
    assert q.search_query(F, trace_ids=[TID], oldest_first=True).endswith("sort @timestamp asc | limit 50")


def test_stats_facets_and_patterns_are_pinned():
    assert q.stats_query(F, group_by="level", interval_ms=300_000, service="api") == (
        "filter service =~ /^(api)$/ | stats count(*) as n, min(@timestamp) as first, max(@timestamp) as last"
        " by bin(300s) as bucket, level as grp")
    assert q.stats_query(F, group_by="service", interval_ms=1500).endswith("by bin(1500ms) as bucket, service as grp")
    assert q.facets_query(F) == "stats count(*) as n by service as svc, level as lvl"
    assert q.json_pattern(F, service="api", levels=["ERROR"], trace_ids=[TID]) == (
        '{ ($.service = "api") && ($.level = "ERROR" || $.level = "error" || $.level = "Error" || $.level = "ERR" '
        f'|| $.level = "err" || $.level = "Err") && ($.trace_id = "{TID}") }}')
    assert q.json_pattern(F, service='a"b') == ""  # a value the pattern cannot take is left to the exact check
    chunks = q.trace_pattern_chunks(F, [f"{i:032x}" for i in range(60)] + ['bad"id'])
    assert sum(len(c) for c in chunks) == 61 and chunks[-1] == ['bad"id']
    assert all(len(q.json_pattern(F, trace_ids=c)) <= q.MAX_PATTERN_CHARS for c in chunks[:-1])


def test_field_names_are_checked():
    assert q.Fields.from_overrides({"trace_id": "traceId", "level": "ctx.level"}).trace_id == "traceId"
    for bad in ("a | b", "x/", "`x`", "a b", "", "lvl#"):
        with pytest.raises(InvalidInput):
            q.Fields.from_overrides({"level": bad})
    with pytest.raises(InvalidInput, match="Unknown"):
        q.Fields.from_overrides({"timestamp": "t"})


def _commands(query: str) -> list[str]:
    """The query's pipe commands, splitting only outside /regex/ literals (backslash escapes
    the next character inside one), as Logs Insights reads them."""
    out, cur, in_re, i = [], "", False, 0
    while i < len(query):
        c = query[i]
        if in_re and c == "\\":
            cur += query[i:i + 2]
            i += 2
            continue
        if c == "/":
            in_re = not in_re
        if c == "|" and not in_re:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    assert not in_re, f"unterminated literal in {query!r}"
    return [*out, cur.strip()]


def _py_regex(literal: str) -> re.Pattern[str]:
    body = literal[1:-1]
    return re.compile(re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: re.escape(chr(int(m.group(1), 16))), body))


def _assert_safe(value: str) -> None:
    query = q.search_query(F, tree=fulltext.parse(f'"{value}"') if '"' not in value and value.strip() else None,
                           service=value, trace_ids=[value], levels=[value], limit=5)
    assert [c.split(" ", 1)[0] for c in _commands(query)] == ["fields", "filter", "sort", "limit"]
    outside = re.sub(r"\\x\{[0-9a-f]+\}", "", query)
    assert not set(outside) & set("\"'`#\n\r\0"), query  # no quote, backtick, comment or line break gets in
    literal = re.search(r"service =~ (/\^\(.*?\)\$/)", query)
    assert literal is not None and _py_regex(literal.group(1)).fullmatch(value), (value, literal)


@pytest.mark.parametrize("value", HOSTILE)
def test_no_argument_can_add_a_pipe_command(value):
    _assert_safe(value)


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=60).filter(lambda s: not re.search("[\ud800-\udfff]", s)))
def test_escaping_holds_for_any_text(value):
    _assert_safe(value)


# --------------------------------------------------------------------------- Insights calls, pinned


def _backend(**kwargs: Any) -> tuple[CloudWatchLogs, Stubber]:
    settings = Settings(aws_endpoint_url="https://logs.us-east-1.amazonaws.com", cloudwatch_log_groups=["/app/api"])
    clients = AwsClients(settings)
    client = clients.client("logs")
    stub = Stubber(client)
    backend = CloudWatchLogs(clients, ["/app/api"], mode="insights", **kwargs)
    backend._groups = (time.monotonic(), ["/app/api"], [])
    return backend, stub


def _row(ts: datetime, doc: dict[str, Any], ptr: str) -> list[dict[str, str]]:
    return [{"field": "@timestamp", "value": ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]},
            {"field": "@message", "value": json.dumps(doc)}, {"field": "@ptr", "value": ptr}]


STATS = {"recordsMatched": 2.0, "recordsScanned": 120.0, "bytesScanned": 3_000_000.0}


def test_search_sends_one_insights_query_and_reads_its_statistics():
    backend, stub = _backend()
    query = q.search_query(F, levels=["ERROR"], limit=2)
    stub.add_response("start_query", {"queryId": "q1"}, {
        "logGroupNames": ["/app/api"], "startTime": int(T0.timestamp()), "endTime": int(T1.timestamp()),
        "queryString": query})
    stub.add_response("get_query_results", {"status": "Running", "results": [], "statistics": STATS},
                      {"queryId": "q1"})
    rows = [_row(T0 + timedelta(minutes=5), {"level": "error", "service": "api", "message": "boom",
                                              "trace_id": TID}, "p1"),
            _row(T0 + timedelta(minutes=1), {"level": "ERROR", "service": "api", "message": "bang"}, "p2")]
    stub.add_response("get_query_results", {"status": "Complete", "results": rows, "statistics": STATS},
                      {"queryId": "q1"})
    with stub:
        page = backend.search(level="ERROR", start=T0, end=T1, limit=1)
    stub.assert_no_pending_responses()
    assert [h.message for h in page.hits] == ["boom"] and page.hits[0].level == "ERROR"
    assert page.total == 2 and page.total_exact and page.next_cursor is not None
    assert any("3.0 MB" in n and "120 records" in n for n in page.notes)
    usage = backend.usage.snapshot()
    assert (usage.queries, usage.bytes_scanned, usage.records_scanned) == (1, 3_000_000, 120)


def test_the_byte_cap_stops_the_query_and_says_so():
    backend, stub = _backend(max_bytes=1_000_000)
    stub.add_response("start_query", {"queryId": "q2"}, None)
    stub.add_response("get_query_results", {"status": "Running", "results": [_row(T0, {"message": "m"}, "p")],
                                            "statistics": STATS}, {"queryId": "q2"})
    stub.add_response("stop_query", {"success": True}, {"queryId": "q2"})
    with stub:
        page = backend.search(start=T0, end=T1)
    stub.assert_no_pending_responses()
    assert not page.total_exact and any("stopped the query after 3.0 MB" in n for n in page.notes)
    assert backend.usage.snapshot().stopped == 1


def test_the_time_bound_stops_the_query():
    backend, stub = _backend(query_timeout=1e-9)  # the bound is over after the first poll
    stub.add_response("start_query", {"queryId": "q3"}, None)
    stub.add_response("get_query_results", {"status": "Running", "results": []}, {"queryId": "q3"})
    stub.add_response("stop_query", {"success": True}, {"queryId": "q3"})
    with stub, pytest.raises(BackendUnavailable, match="did not finish within"):
        backend.search(start=T0, end=T1)
    stub.assert_no_pending_responses()
    assert backend.usage.snapshot().stopped == 1


def test_a_failed_query_is_a_tool_error():
    backend, stub = _backend()
    stub.add_response("start_query", {"queryId": "q4"}, None)
    stub.add_response("get_query_results", {"status": "Failed", "results": []}, {"queryId": "q4"})
    with stub, pytest.raises(BackendUnavailable, match="ended Failed"):
        backend.search(start=T0, end=T1)
    backend2, stub2 = _backend()
    stub2.add_client_error("start_query", "MalformedQueryException", "unexpected symbol", 400)
    with stub2, pytest.raises(InvalidInput, match="unexpected symbol"):
        backend2.search(start=T0, end=T1)


class _Running:
    """A logs client whose queries never finish (for the cancel test)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.polls = 0

    def start_query(self, **kw: Any) -> dict[str, Any]:
        return {"queryId": "q5"}

    def get_query_results(self, **kw: Any) -> dict[str, Any]:
        self.polls += 1
        return {"status": "Running", "results": []}

    def stop_query(self, **kw: Any) -> dict[str, Any]:
        self.stopped.set()
        return {"success": True}


async def test_a_cancelled_call_stops_its_query():
    backend, _ = _backend(query_timeout=60)
    fake = _Running()
    backend.clients._clients["logs"] = fake
    tools = LogTools(Settings(log_backend="cloudwatch", cloudwatch_log_groups=["/app/api"]), store=backend)
    with anyio.move_on_after(0.5):
        await tools.search_logs(start="-1h")
    assert fake.stopped.is_set() and fake.polls >= 1
    assert backend.usage.snapshot().stopped == 0  # cancelled: stop_query sent, counted as a query
    assert backend.usage.snapshot().queries == 1


def test_stats_and_error_lines_through_insights():
    backend, stub = _backend()
    stub.add_response("start_query", {"queryId": "s"}, {
        "logGroupNames": ["/app/api"], "startTime": int(T0.timestamp()), "endTime": int(T1.timestamp()),
        "queryString": q.stats_query(F, group_by="level", interval_ms=600_000)})
    stub.add_response("get_query_results", {"status": "Complete", "statistics": STATS, "results": [
        [{"field": "bucket", "value": "2026-11-21 14:10:00.000"}, {"field": "grp", "value": "error"},
         {"field": "n", "value": "3"}, {"field": "first", "value": "2026-11-21 14:11:00.000"},
         {"field": "last", "value": "2026-11-21 14:12:00.000"}],
        [{"field": "bucket", "value": "2026-11-21 14:10:00.000"}, {"field": "grp", "value": "ERROR"},
         {"field": "n", "value": "2"}, {"field": "first", "value": "2026-11-21 14:10:30.000"},
         {"field": "last", "value": "2026-11-21 14:19:00.000"}]]}, {"queryId": "s"})
    with stub:
        stats = backend.stats(T0, T1, "level", 600)
    assert [(g.key, g.total, g.counts[1]) for g in stats.groups] == [("ERROR", 5, 5)]
    assert len(stats.bucket_starts_ms) == 7
    backend, stub = _backend()
    stub.add_response("start_query", {"queryId": "e"}, None)
    recent = datetime.now(UTC) - timedelta(hours=1)  # trace lookups read the newest 24 h
    stub.add_response("get_query_results", {"status": "Complete", "results": [
        _row(recent, {"level": "ERROR", "service": "api", "message": "one", "trace_id": TID}, "p1"),
        _row(recent, {"level": "ERROR", "service": "api", "message": "near", "trace_id": TID + "3"}, "p2")]},
        {"queryId": "e"})
    with stub:
        errors = backend.error_lines([TID])
    assert {t: [e["message"] for e in v] for t, v in errors.items()} == {TID: ["one"]}  # exact ids only


def test_query_mode_follows_the_endpoint():
    assert query_mode(Settings()) == "insights"
    assert query_mode(Settings(aws_endpoint_url="https://logs.eu-west-1.amazonaws.com")) == "insights"
    assert query_mode(Settings(aws_endpoint_url="http://localhost:4566")) == "filter"
    assert query_mode(Settings(aws_endpoint_url="http://localhost:4566", cloudwatch_query="insights")) == "insights"


# --------------------------------------------------------------------------- loading, doctor, metrics


def test_batches_keep_put_log_events_limits():
    big = "x" * 200_000
    out = batches([(i, big) for i in range(12)])
    assert all(sum(len(e["message"]) + 26 for e in b) <= MAX_BATCH_BYTES for b in out) and len(out) == 3
    spread = batches([(0, "a"), (25 * 3_600_000, "b"), (1, "c")])
    assert [[e["message"] for e in b] for b in spread] == [["a", "c"], ["b"]]
    assert [len(b) for b in batches([(i, "m") for i in range(25_000)])] == [10_000, 10_000, 5_000]


def _lines(path: Path, now: datetime) -> Path:
    docs = [{"@timestamp": (now - timedelta(seconds=i)).isoformat(), "level": "ERROR" if i % 3 == 0 else "INFO",
             "service": "api", "message": f"line {i}", "trace_id": f"t{i % 4}"} for i in range(30)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs) + "not json\n")
    return path


def test_logs_load_is_idempotent_and_doctor_checks(fresh_moto, tmp_path, capsys):
    jsonl = _lines(tmp_path / "l.jsonl", datetime.now(UTC))
    env = {"AWS_ENDPOINT_URL": fresh_moto, "OPSMCP_LOG_BACKEND": "cloudwatch", "OPSMCP_DATA_DIR": str(tmp_path),
           "OPSMCP_CLOUDWATCH_LOG_GROUPS": "/opsmcp/t/api,/opsmcp/t/missing", "OPSMCP_TOOLSETS": "logs"}
    with patch.dict(os.environ, env):
        assert main(["logs", "load", str(jsonl), "--quiet"]) == 0
        first = capsys.readouterr().err
        assert main(["logs", "load", str(jsonl), "--quiet"]) == 0
        second = capsys.readouterr().err
        assert "loaded 30 lines" in first and "bad lines: 1" in first and "→ log group /opsmcp/t/api" in first
        assert "loaded 0 lines" in second and "30 lines already stored" in second
        assert main(["doctor"]) == 1
        out = capsys.readouterr().out
    assert "OK   cloudwatch logs: reachable" in out and "mode filter" in out
    assert "OK   cloudwatch log groups: 1 group(s): /opsmcp/t/api" in out
    assert "FAIL cloudwatch log groups: not found: /opsmcp/t/missing" in out
    backend = CloudWatchLogs.from_settings(make_settings(fresh_moto, tmp_path, cloudwatch_log_groups=["/opsmcp/t/*"]))
    assert backend.search(service="api").total == 30


async def test_metrics_export_what_insights_scanned(tmp_path):
    from opsmcp.server import build_server

    settings = Settings(data_dir=tmp_path, toolsets=["logs"], log_backend="cloudwatch",
                        cloudwatch_log_groups=["/app/api"], aws_endpoint_url="https://logs.us-east-1.amazonaws.com")
    server, runtime = build_server(settings)
    backend, stub = _backend()
    runtime.toolsets["logs"]._store = backend  # type: ignore[attr-defined]
    stub.add_response("start_query", {"queryId": "m"}, None)
    stub.add_response("get_query_results", {"status": "Complete", "results": [], "statistics": STATS},
                      {"queryId": "m"})
    stub.add_response("describe_log_streams", {"logStreams": []}, None)  # the empty result's note
    with stub:
        async with Client(server) as client:
            out = await call(client, "search_logs", start="-1h")
    assert any("3.0 MB" in n for n in out["notes"])
    text = runtime.stats.render().decode()
    assert 'opsmcp_log_bytes_scanned_total{backend="cloudwatch"} 3e+06' in text
    assert 'opsmcp_log_queries_total{backend="cloudwatch"} 1.0' in text


# --------------------------------------------------------------------------- the sandbox incident


async def test_sandbox_incident_root_cause_matches_the_embedded_store(fresh_moto, tmp_path):
    """OPSMCP_LOG_BACKEND=cloudwatch on the embedded sandbox: the log lines are seeded into
    moto's CloudWatch Logs too, and analyze_dlq explains the DLQs exactly as it does from
    the embedded store."""
    import urllib.request

    from opsmcp.sandbox import start_sandbox
    from opsmcp.server import build_server

    sandbox = start_sandbox(Settings(data_dir=tmp_path, aws_region="us-east-1", log_backend="cloudwatch"))
    try:
        counts = sandbox.seed()
        assert counts["log_events"] == counts["log_lines"] == 12001
        assert sandbox.settings.cloudwatch_log_groups == ["/opsmcp/sandbox/*"]
        answers = {}
        for kind in ("cloudwatch", "embedded"):
            server, runtime = build_server(sandbox.settings.model_copy(update={"log_backend": kind}))
            assert "logs" not in runtime.disabled
            async with Client(server) as client:
                answers[kind] = {q: [(g["service"], g["error_message"], g["basis"], g["count"], tuple(g["trace_ids"]))
                                     for g in (await call(client, "analyze_dlq", queue=q))["groups"]]
                                 for q in ("order-queue-dlq", "payment-queue-dlq.fifo")}
    finally:
        sandbox.stop()
        urllib.request.urlopen(urllib.request.Request(f"{fresh_moto}/moto-api/reset", method="POST"), timeout=10).read()
    assert answers["cloudwatch"] == answers["embedded"]
    assert any(g[1] and "Database connection timeout" in g[1] and g[2] == "logs"
               for g in answers["cloudwatch"]["order-queue-dlq"])
