"""The Loki backend beyond the behavioural module (tests/test_log_backends.py).

No Loki server installs here; what is checked, and against what:

- LogQL text: pinned as pure functions, and every query the tests produce parsed by
  Grafana's own grammar (``@grafana/lezer-logql`` through node: tests/logql_grammar,
  installed by scripts/test; under CI it must be there, never skipped).
- Escaping: hostile values round-trip through the string literal exactly and never add a
  stage (the grammar parses the query; the stand-in's parser finds the same stages).
- HTTP: the requests each tool sends (paths, parameters, nanosecond windows, auth and
  X-Scope-OrgID headers), pinned against the stand-in (tests/loki_standin.py), which
  answers Loki's documented response shapes; Loki's errors become tool errors.
- The sandbox incident's root cause comes out of ``analyze_dlq`` exactly as on the
  embedded store, and ``opsmcp doctor`` checks Loki.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, UTC
from pathlib import Path
from unittest.mock import patch

import pytest
from helpers import call, make_settings
from hypothesis import given, settings as hsettings, strategies as st
from loki_standin import parse_log_query, running
from mcp import Client

from opsmcp.backends import fulltext
from opsmcp.backends.loki import LokiLogs
from opsmcp.backends.loki import logql as lq
from opsmcp.backends.loki.client import LokiClient
from opsmcp.backends.loki.load import fixed_labels, load_jsonl, push_body
from opsmcp.cli import main
from opsmcp.config import Settings
from opsmcp.errors import BackendUnavailable, InvalidInput, OpsError

pytestmark = pytest.mark.anyio
GRAMMAR = Path(__file__).resolve().parent / "logql_grammar"
F = lq.Fields()
SEL = '{service_name=~".+"}'
TID = "ce79cdee-0e35-4d47-84b0-9d3247266382"
HOSTILE = ['x"} | line_format "pwned', "a\\", '"', "`", "|", "} or {a=\"b\"", "\n", "\u0000\u2028", "ünï|cødé",
           "$(reboot)", "(?i).*", "a" * 3000, '{job="x"}', "\\x{41}"]


def grammar_errors(queries: list[str]) -> list[dict | None]:
    """Parse each query with @grafana/lezer-logql; None for a query that parses."""
    node = shutil.which("node")
    if node is None or not (GRAMMAR / "node_modules" / "@grafana" / "lezer-logql").exists():
        if os.environ.get("CI"):
            pytest.fail("Grafana's LogQL grammar is not installed: scripts/test runs npm ci in tests/logql_grammar")
        pytest.skip("Grafana's LogQL grammar is not installed (cd tests/logql_grammar && npm ci)")
    out = subprocess.run([node, "check.mjs"], cwd=GRAMMAR, input=json.dumps(queries), capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def _queries_for(value: str) -> list[str]:
    tree = fulltext.parse(f'"{value}" OR word*') if '"' not in value and value.strip() else None
    sel = lq.selector(SEL, "service_name", value)
    stages = lq.pipeline(F, tree=tree, levels=[value], trace_ids=[value])
    return [lq.log_query(sel, stages), lq.count_query(sel, stages, 60_000, lq.LEVEL),
            lq.log_query(sel, lq.pipeline(F, trace_ids=[value, "other"]))]


# --------------------------------------------------------------------------- LogQL text


def test_queries_are_pinned():
    tree = fulltext.parse('"connection timeout" gateway* NOT retry')
    sel = lq.selector(SEL, "service_name", "order-processor")
    assert lq.log_query(sel, lq.pipeline(F, tree=tree, levels=["ERROR"], trace_ids=[TID])) == (
        '{service_name=~".+", service_name="order-processor"}'
        r' |~ "(?i)\\bconnection\\b" |~ "(?i)\\btimeout\\b" |~ "(?i)\\bgateway"'
        f' |= "{TID}"'
        ' | json opsmcp_level="level", opsmcp_trace="trace_id" | drop __error__, __error_details__'
        ' | opsmcp_level=~"(?i)^(ERROR|ERR)$"'
        f' | opsmcp_trace="{TID}"')
    assert lq.count_query(SEL, lq.pipeline(F, extract_level=True), 300_000, lq.LEVEL) == (
        'sum by (opsmcp_level) (count_over_time({service_name=~".+"} | json opsmcp_level="level"'
        ' | drop __error__, __error_details__ [300000ms]))')
    assert lq.line_filters(fulltext.parse("gateway OR timeout")) == [r'|~ "(?i)(\\bgateway\\b|\\btimeout\\b)"']
    assert lq.line_filters(fulltext.parse("café OR timeout")) == []  # a non-ASCII word cannot narrow the raw line
    assert lq.log_query(SEL, lq.pipeline(F, trace_ids=["a", "b-c"])) == (
        r'{service_name=~".+"} |~ "(a|b\\x{2d}c)" | json opsmcp_trace="trace_id"'
        r' | drop __error__, __error_details__ | opsmcp_trace=~"^(a|b\\x{2d}c)$"')


def test_settings_are_checked():
    for bad in ('service_name=~".+"', '{a=".+"} | json', "{}", '{a=~".+"} or {b="c"}'):
        with pytest.raises(InvalidInput, match="stream selector"):
            lq.check_names(bad, "service_name")
    with pytest.raises(InvalidInput, match="label name"):
        lq.check_names(SEL, "service name")
    with pytest.raises(InvalidInput):
        lq.Fields.from_overrides({"level": 'a"b'})
    assert fixed_labels('{env="prod", app=~"x.*", team != "y", k="a\\"b"}') == {"env": "prod", "k": 'a"b'}


def test_every_query_parses_with_grafanas_grammar():
    queries = [
        *_queries_for("order-processor"), lq.count_query(SEL, [], 1, None),
        lq.count_query(lq.selector('{namespace="shop"}', "app", "x"), [], 5, "app"),
        lq.log_query(SEL, lq.pipeline(F, tree=fulltext.parse("(a OR b*) AND c NOT d"), levels=["WARN", "ERROR"])),
    ]
    for value in HOSTILE:
        queries += _queries_for(value)
    errors = grammar_errors(queries)
    assert [(q, e) for q, e in zip(queries, errors, strict=True) if e] == []
    assert grammar_errors(['{a="b"} | json x="y" |', '{a="b" |= "x"']) != [None, None]  # the check can fail


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_values(value):
    query = _queries_for(value)[0]
    matchers, stages = parse_log_query(query)
    assert matchers[-1] == ("service_name", "=", value)
    assert [s[0] for s in stages][-4:] == ["json", "drop", "label", "label"]
    assert stages[-1] == ("label", lq.TRACE, "=", value)


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)))
def test_string_literals_round_trip(value):
    assert json.loads(lq.string(value)) == value
    matchers, stages = parse_log_query(lq.log_query(lq.selector(SEL, "service_name", value),
                                                    lq.pipeline(F, trace_ids=[value])))
    assert matchers[-1][2] == value and stages[0] == ("line", "|=", value) and stages[-1][3] == value


# --------------------------------------------------------------------------- HTTP, pinned


def _load(standin_url: str, tmp_path: Path, now: datetime) -> Path:
    docs = [{"@timestamp": (now - timedelta(seconds=10 * i)).isoformat(), "service": "api" if i % 2 else "worker",
             "level": "ERROR" if i % 3 == 0 else "info", "message": f"request {i} failed: gateway timeout"
             if i % 3 == 0 else f"request {i} ok", "trace_id": f"t{i % 5}"} for i in range(40)]
    path = tmp_path / "l.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs) + "plain text line\n")
    report = load_jsonl(LokiClient(standin_url), [str(path)])
    assert report.loaded == 40 and report.bad == 1
    return path


def test_requests_are_pinned(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with running(token="s3cret") as loki:
        client = LokiClient(loki.url, headers={"Authorization": "Bearer s3cret", "X-Scope-OrgID": "team-a"})
        backend = LokiLogs(client)
        _load_into = load_jsonl(client, [str(_write(tmp_path, now))])
        assert _load_into.loaded == 3
        push = loki.requests[-1]
        assert push["path"] == "/loki/api/v1/push" and push["headers"]["X-Scope-OrgID"] == "team-a"
        assert json.loads(push["body"])["streams"][0]["stream"] == {"service_name": "api"}
        loki.requests.clear()
        page = backend.search(level="error", start=now - timedelta(minutes=5), end=now, limit=1)
        count, lines = loki.requests
        lo, hi = (now - timedelta(minutes=5)).timestamp(), now.timestamp()
        assert count["path"] == "/loki/api/v1/query" and count["params"] == {
            "query": lq.count_query(SEL, lq.pipeline(F, levels=["ERROR"]), 300_001),
            "time": str(int(hi * 1000 + 1) * 1_000_000 - 1)}
        assert lines["path"] == "/loki/api/v1/query_range" and lines["params"] == {
            "query": lq.log_query(SEL, lq.pipeline(F, levels=["ERROR"])), "start": str(int(lo * 1000) * 1_000_000),
            "end": str(int(hi * 1000 + 1) * 1_000_000), "limit": "2", "direction": "backward"}
        assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in (count, lines))
        assert page.total == 2 and [h.message for h in page.hits] == ["boom 2"] and page.next_cursor
        nxt = backend.search(level="error", start=now - timedelta(minutes=5), end=now, limit=1, cursor=page.next_cursor)
        assert [h.message for h in nxt.hits] == ["boom 0"] and nxt.next_cursor is None and nxt.total == 2
        assert backend.usage.snapshot().bytes_scanned > 0
        other = LokiLogs(LokiClient(loki.url, headers={"Authorization": "Bearer s3cret", "X-Scope-OrgID": "team-b"}))
        assert other.search(start=now - timedelta(minutes=5), end=now).total == 0  # tenants do not mix
        with pytest.raises(OpsError, match=r"refused .*401"):
            LokiLogs(LokiClient(loki.url)).search(start=now - timedelta(minutes=5), end=now)


def _write(tmp_path: Path, now: datetime) -> Path:
    path = tmp_path / "three.jsonl"
    rows = [(30, "ERROR", "boom 0"), (20, "INFO", "ok 1"), (10, "err", "boom 2")]
    path.write_text("".join(json.dumps({"@timestamp": (now - timedelta(seconds=s)).isoformat(), "service": "api",
                                        "level": lvl, "message": msg}) + "\n" for s, lvl, msg in rows))
    return path


def test_stats_are_exact_at_the_window_edges(tmp_path):
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    with running() as loki:
        client = LokiClient(loki.url)
        docs = [{"@timestamp": (now + timedelta(seconds=s)).isoformat(), "service": "api", "level": lvl,
                 "message": "m"} for s, lvl in ((0, "ERROR"), (59, "ERROR"), (60, "INFO"), (61, "INFO"), (150, "WARN"),
                                                (179, "ERROR"), (180, "ERROR"))]
        path = tmp_path / "s.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        load_jsonl(client, [str(path)])
        backend = LokiLogs(client, max_window_ms=10**12)
        loki.requests.clear()
        stats = backend.stats(now + timedelta(seconds=30), now + timedelta(seconds=179), "level", 60)
        assert stats.bucket_starts_ms[0] == int(now.timestamp() * 1000)
        assert {g.key: g.counts for g in stats.groups} == {"ERROR": [1, 0, 1], "INFO": [0, 2, 0], "WARN": [0, 0, 1]}
        kinds = [(r["path"].rsplit("/", 1)[1], r["params"].get("step")) for r in loki.requests]
        assert kinds == [("query", None), ("query", None), ("query_range", "60")]  # 2 partial edges, 1 whole bucket
        whole = backend.stats(now, now + timedelta(seconds=179.999), "service", 60)
        assert [(g.key, g.counts) for g in whole.groups] == [("api", [2, 2, 2])]
        assert [r["path"].rsplit("/", 1)[1] for r in loki.requests[3:]] == ["query_range"]


def test_loki_errors_are_tool_errors():
    with running() as loki:
        backend = LokiLogs(LokiClient(loki.url))
        loki.fail_next = (400, "parse error at line 1, col 12: syntax error: unexpected IDENTIFIER")
        with pytest.raises(InvalidInput, match=r"Loki rejected .* unexpected IDENTIFIER"):
            backend.search(service="x")
        loki.fail_next = (429, "Ingestion rate limit exceeded")
        with pytest.raises(BackendUnavailable, match="throttling"):
            backend.search(service="x")
        loki.fail_next = (500, "too many outstanding requests")
        with pytest.raises(BackendUnavailable, match="500"):
            backend.search(service="x")
        url = loki.url
    with pytest.raises(BackendUnavailable, match="Cannot reach Loki"):
        LokiLogs(LokiClient(url, timeout=1)).search(service="x")


def test_from_settings_checks_its_configuration():
    with pytest.raises(OpsError, match="OPSMCP_LOKI_URL"):
        LokiLogs.from_settings(Settings(log_backend="loki"))
    with pytest.raises(OpsError, match="choose one"):
        LokiLogs.from_settings(Settings(loki_url="http://x", loki_token="t", loki_username="u", loki_password="p"))
    with pytest.raises(InvalidInput, match="stream selector"):
        LokiLogs.from_settings(Settings(loki_url="http://x", loki_selector="app=x"))
    assert push_body([({"a": "1"}, 5, "x"), ({"a": "1"}, 6, "y"), ({"a": "2"}, 7, "z")]) == {"streams": [
        {"stream": {"a": "1"}, "values": [["5", "x"], ["6", "y"]]}, {"stream": {"a": "2"}, "values": [["7", "z"]]}]}


def test_doctor_checks_loki(tmp_path, capsys):
    with running() as loki:
        env = {"OPSMCP_LOG_BACKEND": "loki", "OPSMCP_LOKI_URL": loki.url, "OPSMCP_DATA_DIR": str(tmp_path),
               "OPSMCP_TOOLSETS": "logs", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        with patch.dict(os.environ, env):
            main(["doctor"])
            empty = capsys.readouterr().out
            _load(loki.url, tmp_path, datetime.now(UTC))
            assert main(["doctor"]) == 0
            loaded = capsys.readouterr().out
    assert "OK   loki: reachable at" in empty and "FAIL loki labels: no stream has the label 'service_name'" in empty
    assert "OK   loki labels: service_name: 2 value(s), e.g. api, worker" in loaded
    assert "OK   loki query: newest line at" in loaded


# --------------------------------------------------------------------------- the sandbox incident


async def test_sandbox_incident_root_cause_matches_the_embedded_store(fresh_moto, tmp_path):
    """The sandbox scenario's log lines in Loki (pushed to the stand-in) and in the embedded
    store; its queues in moto: analyze_dlq explains the DLQs the same from both."""
    from opsmcp.sandbox.logseed import seed_logs
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    scenario = build_scenario()
    jsonl = tmp_path / "scenario.jsonl"
    jsonl.write_text("".join(line.to_json() + "\n" for line in scenario.log_lines()))
    store = tmp_path / "logs.db"
    assert seed_logs(store, scenario) == 12001
    with running() as loki:
        with patch.dict(os.environ, {"OPSMCP_LOKI_URL": loki.url}):
            assert main(["logs", "load", str(jsonl), "--to", "loki", "--quiet"]) == 0
        base = make_settings(fresh_moto, tmp_path, toolsets=["queues", "orders", "logs"], log_store=store,
                             loki_url=loki.url)
        seed_aws(base, scenario, metrics=False)
        answers = {}
        for kind in ("loki", "embedded"):
            server, runtime = build_server(base.model_copy(update={"log_backend": kind}))
            assert "logs" not in runtime.disabled
            async with Client(server) as client:
                answers[kind] = {q: [(g["service"], g["error_message"], g["basis"], g["count"], tuple(g["trace_ids"]))
                                     for g in (await call(client, "analyze_dlq", queue=q))["groups"]]
                                 for q in ("order-queue-dlq", "payment-queue-dlq.fifo")}
    assert answers["loki"] == answers["embedded"]
    assert any(g[1] and "Database connection timeout" in g[1] and g[2] == "logs"
               for g in answers["loki"]["order-queue-dlq"])
