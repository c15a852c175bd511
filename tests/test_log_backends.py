"""The same answers on every log engine: one behavioural module, parametrised over

- ``embedded``: the SQLite store;
- ``openmock``: OpenSearch faked in-process by openmock (it implements term, terms,
  range, bool, sort on one key and terms aggregations only, so full text, stats and
  search_after paging are skipped there with that reason);
- ``opensearch``: a real cluster at ``OPSMCP_TEST_OPENSEARCH_URL`` (skipped when unset),
  each run in its own index, deleted afterwards;
- ``cloudwatch``: CloudWatch Logs in a moto server of its own (a child process), read in
  ``filter`` mode (FilterLogEvents matched here: moto runs only Insights' fields/sort/limit;
  the Insights requests are pinned in tests/test_cloudwatch_logs_query.py);
- ``loki``: the Loki stand-in (tests/loki_standin.py: a loopback server answering Loki's
  documented API shapes for the LogQL opsmcp sends).

Data: the vendored ops_agent fixture logs (three failure stories) plus lines whose trace
ids share UUID segments with the fixture's, and 120 lines of one service for paging, all
loaded with ``opsmcp logs load`` (``--to opensearch|cloudwatch|loki`` for the other engines).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, UTC
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from helpers import call, make_settings

from opsmcp.cli import main
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput
from opsmcp.toolsets.logs import LogTools

REAL_URL = os.environ.get("OPSMCP_TEST_OPENSEARCH_URL")
OPENMOCK_URL = "http://openmock.invalid:9200"
OPENMOCK_CANNOT = {
    "full_text": "openmock implements no simple_query_string (full text is checked on a real cluster)",
    "stats": "openmock returns terms buckets without date_histogram sub-aggregations",
    "paging": "openmock ignores search_after and point in time (and returns no sort values)",
}
TID = "ce79cdee-0e35-4d47-84b0-9d3247266382"
NEAR = ("ce79cdee-0e35-4d47-84b0-9d3247266383", "ce79cdee-0e35-4d47-84b0-000000000000", "ce79cdee")
PAGER_LINES = 120


def _documents(now: datetime, fixtures_dir: Path) -> list[dict]:
    docs = []
    for doc in json.loads((fixtures_dir / "logs.json").read_text()):
        d = dict(doc)
        d["@timestamp"] = (now - timedelta(seconds=d.pop("seconds_before_load"))).isoformat()
        docs.append(d)
    for i, tid in enumerate(NEAR):  # ids sharing segments with TID; an hour earlier, so windows stay clean
        docs.append({"@timestamp": (now - timedelta(hours=1, seconds=i)).isoformat(), "level": "ERROR",
                     "service": "lookalike", "message": f"lookalike failure {i}", "trace_id": tid})
    for i in range(PAGER_LINES):
        docs.append({"@timestamp": (now - timedelta(hours=2, seconds=i)).isoformat(), "level": "INFO",
                     "service": "pager", "msg": f"page line {i:03d}", "svc": "pager"})
    return docs


def _openmock_patches() -> list:
    import openmock
    from openmock import FakeClusterClient, FakeIndicesClient

    openmock.OPEN_INSTANCES.clear()
    return [
        patch("opensearchpy.OpenSearch", openmock._get_openmock),
        patch("opensearchpy.client.indices.IndicesClient", FakeIndicesClient),
        patch("opensearchpy.client.cluster.ClusterClient", FakeClusterClient),
        patch("opensearchpy.transport.Transport.perform_request", openmock._fail_on_real_connection),
    ]


ENGINES = ["embedded", "openmock", "opensearch", "cloudwatch", "loki"]
CW_GROUP = "/opsmcp/test/app"
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("engine", ENGINES, indirect=True, scope="module")]


@pytest.fixture(scope="module")
def engine(request, tmp_path_factory, fixtures_dir_module) -> Iterator[SimpleNamespace]:
    """A loaded engine: kind, settings (for build_server), tools (LogTools), now, cannot."""
    kind = request.param
    if kind == "opensearch" and not REAL_URL:
        pytest.skip("no real OpenSearch cluster: set OPSMCP_TEST_OPENSEARCH_URL (e.g. http://localhost:9200) "
                    "to run these tests against one")
    tmp = tmp_path_factory.mktemp(kind)
    now = datetime.now(UTC).replace(microsecond=0)
    jsonl = tmp / "logs.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in _documents(now, fixtures_dir_module)))
    with ExitStack() as stack:
        if kind == "embedded":
            settings = Settings(data_dir=tmp, log_store=tmp / "logs.db")
            assert main(["logs", "load", str(jsonl), "--store", str(tmp / "logs.db"), "--quiet"]) == 0
        elif kind == "cloudwatch":
            from moto_process import MotoProcess

            moto = stack.enter_context(_moto_child())
            settings = Settings(data_dir=tmp, log_backend="cloudwatch", aws_endpoint_url=moto.endpoint,
                                cloudwatch_log_groups=["/opsmcp/test/*"])
            with patch.dict(os.environ, {"AWS_ENDPOINT_URL": moto.endpoint}):
                assert main(["logs", "load", str(jsonl), "--to", "cloudwatch", "--group", CW_GROUP, "--quiet"]) == 0
            assert isinstance(moto, MotoProcess)
        elif kind == "loki":
            from loki_standin import running

            standin = stack.enter_context(running())
            settings = Settings(data_dir=tmp, log_backend="loki", loki_url=standin.url)
            with patch.dict(os.environ, {"OPSMCP_LOKI_URL": standin.url}):
                assert main(["logs", "load", str(jsonl), "--to", "loki", "--quiet"]) == 0
        else:
            if kind == "openmock":
                for p in _openmock_patches():
                    stack.enter_context(p)
                url, index = OPENMOCK_URL, "cwl-behaviour"
            else:
                url, index = REAL_URL, f"cwl-opsmcp-test-{uuid.uuid4().hex[:8]}"
            settings = Settings(data_dir=tmp, log_backend="opensearch", opensearch_url=url, opensearch_index=index)
            with patch.dict(os.environ, {"OPSMCP_OPENSEARCH_URL": url, "OPSMCP_OPENSEARCH_INDEX": index}):
                assert main(["logs", "load", str(jsonl), "--to", "opensearch", "--index", index, "--quiet"]) == 0
        tools = LogTools(settings)
        try:
            yield SimpleNamespace(kind=kind, settings=settings, tools=tools, now=now, jsonl=jsonl,
                                  cannot=OPENMOCK_CANNOT if kind == "openmock" else {})
        finally:
            if kind == "opensearch":
                tools.store.client.indices.delete(index=settings.opensearch_index)  # type: ignore[attr-defined]
            tools.store.close()


@contextmanager
def _moto_child() -> Iterator[Any]:
    """A moto server of the engine's own: the session's is reset by other tests."""
    from moto_process import MotoProcess

    moto = MotoProcess().start()
    try:
        yield moto
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def fixtures_dir_module() -> Path:
    from helpers import FIXTURES

    return FIXTURES


def needs(engine: SimpleNamespace, feature: str) -> None:
    """Skip with the engine's reason when it cannot do ``feature``."""
    if feature in engine.cannot:
        pytest.skip(f"{engine.kind}: {engine.cannot[feature]}")


# --------------------------------------------------------------------------- the fixture's stories


async def test_analyze_dlq_finds_the_three_failure_stories(engine, fresh_moto, tmp_path, fixtures_dir):
    from mcp import Client
    from helpers import load_fixture_into

    from opsmcp.server import build_server

    extra = {k: getattr(engine.settings, k) for k in ("log_backend", "opensearch_url", "opensearch_index",
                                                      "cloudwatch_log_groups", "loki_url")}
    settings = make_settings(fresh_moto, tmp_path, toolsets=["queues", "orders", "logs"],
                             log_store=engine.settings.log_store_path, **extra)
    if engine.kind == "cloudwatch":  # the lines into this moto too: the queues and the logs share one endpoint
        with patch.dict(os.environ, {"AWS_ENDPOINT_URL": fresh_moto}):
            assert main(["logs", "load", str(engine.jsonl), "--to", "cloudwatch", "--group", CW_GROUP, "--quiet"]) == 0
    load_fixture_into(fresh_moto, fixtures_dir, settings)
    server, runtime = build_server(settings)
    assert "logs" not in runtime.disabled
    async with Client(server) as client:
        groups = [g for q in ("order-queue-dlq", "order-cancellation-queue-dlq")
                  for g in (await call(client, "analyze_dlq", queue=q))["groups"]]
    assert {(g["service"], g["error_message"], g["basis"], tuple(g["trace_ids"])) for g in groups} == {
        ("order-processor", "Failed again - Database connection timeout", "logs", (TID,)),
        ("payment-service", "Payment failed again - Payment gateway unavailable", "logs",
         ("fe89cdee-1e35-4d47-84b0-9d3247266390",)),
        ("order-cancellation", "Failed to cancel order: Order already shipped", "logs",
         ("ae59cdee-2e45-5d57-95b0-9d3247266456",)),
    }


# --------------------------------------------------------------------------- exactness


async def test_trace_ids_sharing_uuid_segments_never_mix(engine):
    trace = await engine.tools.get_trace(TID)
    assert trace.line_count == 7 and {ln.trace_id for ln in trace.lines} == {TID}
    assert trace.services == ["order-processor"]
    found = await engine.tools.search_logs(trace_id=TID, limit=500)
    assert found.total == 7 and {h.trace_id for h in found.hits} == {TID}
    for near in NEAR:
        other = await engine.tools.get_trace(near)
        assert {ln.trace_id for ln in other.lines} == {near} and other.line_count == 1
    errors = await engine.tools.error_lines([TID, *NEAR])
    assert [e["message"] for e in errors[TID]] == [
        "Failed to validate order data: Invalid product configuration",
        "Failed again - Database connection timeout", "Max retries exceeded - Moving message to DLQ"]
    assert all(len(errors[n]) == 1 for n in NEAR)


async def test_level_and_service_filters(engine):
    both = await engine.tools.search_logs(service="payment-service", level="error", limit=500)
    assert both.total == 3 and {(h.service, h.level) for h in both.hits} == {("payment-service", "ERROR")}
    warn = await engine.tools.search_logs(level="WARNING", limit=500)
    assert warn.total == 4 and {h.level for h in warn.hits} == {"WARN"}
    several = await engine.tools.search_logs(level="WARN,ERROR", service="order-processor", limit=500)
    assert several.total == 5
    assert (await engine.tools.search_logs(service="pager", limit=1)).total == PAGER_LINES


async def test_time_windows_relative_and_iso(engine):
    relative = await engine.tools.search_logs(start="-5m", limit=500)
    assert relative.total == 10  # fixture lines 250 s .. 140 s before the load
    iso = lambda s: (engine.now - timedelta(seconds=s)).isoformat().replace("+00:00", "Z")  # noqa: E731
    window = await engine.tools.search_logs(start=iso(300), end=iso(200), limit=500)
    assert window.total == 6 and all(iso(300) <= h.timestamp <= iso(200) for h in window.hits)
    ordered = [h.timestamp for h in window.hits]
    assert ordered == sorted(ordered, reverse=True)


async def test_phrase_query(engine):
    needs(engine, "full_text")
    phrase = await engine.tools.search_logs(query='"Database connection timeout"')
    assert [h.message for h in phrase.hits] == ["Failed again - Database connection timeout"]
    words = await engine.tools.search_logs(query="Database timeout")
    assert words.total == 1
    either = await engine.tools.search_logs(query="gateway OR shipped")
    assert either.total == 2
    none_of = await engine.tools.search_logs(query="moving NOT cancellation", limit=50)
    assert none_of.total == 2 and all("cancellation" not in h.message.lower() for h in none_of.hits)


async def test_a_bad_query_is_a_tool_error(engine):
    for bad in ('"unterminated phrase', "(gateway OR timeout"):
        with pytest.raises(InvalidInput, match="Cannot parse"):
            await engine.tools.search_logs(query=bad)


async def test_empty_results(engine):
    unknown = await engine.tools.search_logs(service="no-such-service")
    assert unknown.total == 0 and unknown.hits == [] and any("order-processor" in n for n in unknown.notes)
    past = await engine.tools.search_logs(start="2001-01-01T00:00:00Z", end="2001-01-02T00:00:00Z")
    assert past.total == 0 and past.hits == []
    if "full_text" not in engine.cannot:
        nothing = await engine.tools.search_logs(query="zyxwvutsrq")
        assert nothing.total == 0 and nothing.hits == []


async def test_paging_to_the_end_without_gaps_or_repeats(engine):
    needs(engine, "paging")
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = await engine.tools.search_logs(service="pager", limit=25, cursor=cursor)
        assert page.total == PAGER_LINES
        seen += [h.message for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"page line {i:03d}" for i in range(PAGER_LINES)]


async def test_log_stats_counts_match_searches(engine):
    needs(engine, "stats")
    stats = await engine.tools.log_stats(start="-10m", end="now", group_by="service", interval="1m")
    totals = {g.key: g.total for g in stats.groups}
    assert totals == {"order-processor": 9, "payment-service": 4, "order-cancellation": 4}
    by_level = await engine.tools.log_stats(start="-10m", end="now", interval="5m", service="payment-service")
    assert {g.key: g.total for g in by_level.groups} == {"ERROR": 3, "WARN": 1}
    assert sum(sum(g.counts) for g in by_level.groups) == by_level.total == 4


async def test_log_patterns_mark_the_failure_templates_new(engine):
    """The last 5 minutes against the 5 before (drain3 over the backend's paged search)."""
    out = await engine.tools.log_patterns(start="-5m", end="now", limit=100)
    by_template = {p.template: p for p in out.patterns}
    assert out.lines == out.lines_mined == 10
    gateway = by_template["Payment failed again - Payment gateway unavailable"]
    assert gateway.status == "new" and gateway.services == ["payment-service"]
    assert gateway.sample_trace_id == "fe89cdee-1e35-4d47-84b0-9d3247266390"
    assert by_template["Failed to cancel order: Order already shipped"].status == "new"
    assert out.baseline_lines == 7  # the first story, 350 s .. 325 s before the load
