"""The OpenSearch backend without a cluster: request bodies pinned as pure functions and as
sent by each tool (a recording stub client), mapping resolution, the full-text translation,
engine errors as tool errors, the exact-id check on phrase matches, and the loader's
field mapping."""

from __future__ import annotations

import json
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

import pytest
from unittest.mock import patch
from opensearchpy import exceptions as osx

from opsmcp.backends.opensearch import query as q
from opsmcp.backends.opensearch.adapter import OpenSearchLogs, _decode
from opsmcp.backends.opensearch.client import map_error, redact
from opsmcp.backends.opensearch.load import default_index, to_document
from opsmcp.config import Settings
from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError
from opsmcp.toolsets.logs import LogTools

FIXTURE_TEMPLATE = Path(__file__).resolve().parent / "fixtures" / "ops_agent" / "log_index_template.json"
F = q.Fields()
KEYWORD = q.Mapping(exact={"level": "level", "service": "service", "trace_id": "trace_id", "event_id": "event_id"})
T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
TID = "ce79cdee-0e35-4d47-84b0-9d3247266382"
NEAR_TID = "ce79cdee-0e35-4d47-84b0-9d3247266383"  # shares four of five segments


def fixture_mapping() -> dict[str, Any]:
    """The vendored template as a GET _mapping answer for one index."""
    template = json.loads(FIXTURE_TEMPLATE.read_text())
    return {"cwl-2026.11.21": {"mappings": template["template"]["mappings"]}}


class Stub:
    """A client that records every call and answers from a queue of canned responses."""

    def __init__(self, mapping: dict[str, Any], *answers: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = list(answers)
        self._mapping = mapping
        self.indices = self
        self.version = "2.19.1"

    def _answer(self, name: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((name, kwargs))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get_mapping(self, **kw: Any) -> Any:
        return self._mapping

    def info(self, **kw: Any) -> Any:
        return {"version": {"number": self.version}}

    def search(self, **kw: Any) -> Any:
        return self._answer("search", kw)

    def msearch(self, **kw: Any) -> Any:
        return self._answer("msearch", kw)

    def create_pit(self, **kw: Any) -> Any:
        return self._answer("create_pit", kw)

    def delete_pit(self, **kw: Any) -> Any:
        self.calls.append(("delete_pit", kw))

    def close(self) -> None:
        pass


def hit(ts: str, message: str, *, trace: str = TID, level: str = "ERROR", service: str = "order-processor",
        sort: list[Any] | None = None, _id: str = "x") -> dict[str, Any]:
    h: dict[str, Any] = {"_id": _id, "_source": {"@timestamp": ts, "level": level, "service": service,
                                                "message": message, "trace_id": trace}}
    if sort is not None:
        h["sort"] = sort
    return h


def hits(*items: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {"hits": {"total": {"value": len(items) if total is None else total, "relation": "eq"}, "hits": list(items)}}


# --------------------------------------------------------------------------- mapping


def test_fixture_template_maps_trace_id_as_text_only():
    m = q.resolve_mapping(F, fixture_mapping())
    assert m.phrase_only == {"trace_id", "event_id"}
    assert m.exact["level"] == "level" and m.exact["service"] == "service"
    assert m.types["timestamp"] == "date"


def test_keyword_sub_field_is_used_for_text_fields():
    mapping = {"i": {"mappings": {"properties": {
        "service": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
        "trace_id": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
        "level": {"type": "keyword"}}}}}
    m = q.resolve_mapping(F, mapping)
    assert m.exact["service"] == "service.keyword" and m.exact["trace_id"] == "trace_id.raw"
    assert not m.phrase_only
    assert q.exact_clause(m, "trace_id", F, [TID]) == {"term": {"trace_id.raw": TID}}


def test_one_text_only_index_makes_the_field_phrase_only():
    mapping = {"a": {"mappings": {"properties": {"trace_id": {"type": "keyword"}}}},
               "b": {"mappings": {"properties": {"trace_id": {"type": "text"}}}}}
    assert "trace_id" in q.resolve_mapping(F, mapping).phrase_only


def test_field_overrides():
    f = q.Fields.from_overrides({"timestamp": "ts", "trace_id": "traceId"})
    assert f.timestamp == "ts" and f.trace_id == "traceId" and f.level == "level"
    with pytest.raises(InvalidInput):
        q.Fields.from_overrides({"nope": "x"})


# --------------------------------------------------------------------------- full text


@pytest.mark.parametrize(("query", "expected"), [
    ("timeout", "timeout"),
    ('"connection timeout"', '"connection timeout"'),
    ("timeout NOT retry", "(timeout +-retry)"),
    ("payment AND declined", "payment +declined"),
    ("gateway OR timeout", "gateway | timeout"),
    ("a OR b c", "a | (b +c)"),
    ("(gateway OR timeout) AND payment", "(gateway | timeout) +payment"),
    ("time*", "time*"),
    ("orders-db.cluster:5432", '"orders-db.cluster:5432"'),
    ("message:timeout", "timeout"),
])
def test_simple_query_translation(query, expected):
    assert q.simple_query(query) == expected


@pytest.mark.parametrize("bad", ['"unterminated', "(a OR b", "a OR", "NOT a", ")", "a AND", "   "])
def test_bad_queries_are_refused_before_the_engine(bad):
    with pytest.raises(InvalidInput, match=r"Cannot parse|no words"):
        q.simple_query(bad)


def test_near_is_refused_with_a_reason():
    with pytest.raises(InvalidInput, match="cannot run NEAR"):
        q.simple_query("payment NEAR declined")


# --------------------------------------------------------------------------- bodies as pure functions


def test_search_body_first_and_next_page():
    clauses = q.filters(F, KEYWORD, service="payment-service", levels=["WARN", "ERROR"],
                        start_ms=1_000, end_ms=2_000)
    first = q.search_body(F, KEYWORD, text="gateway | timeout", clauses=clauses, size=51, pit_id="P1",
                          keep_alive="5m", search_after=None, count=True)
    assert first == {
        "size": 51,
        "query": {"bool": {
            "filter": [
                {"term": {"service": "payment-service"}},
                {"terms": {"level": ["WARN", "warn", "Warn", "WARNING", "warning", "Warning",
                                     "ERROR", "error", "Error", "ERR", "err", "Err"]}},
                {"range": {"@timestamp": {"gte": "1970-01-01T00:00:01.000Z", "lte": "1970-01-01T00:00:02.000Z"}}},
            ],
            "must": [{"simple_query_string": {"query": "gateway | timeout", "fields": ["message"],
                                              "default_operator": "and", "flags": q.SQS_FLAGS}}],
        }},
        "sort": [{"@timestamp": {"order": "desc"}}, {"_shard_doc": {"order": "desc"}}],
        "track_total_hits": 10_000,
        "pit": {"id": "P1", "keep_alive": "5m"},
    }
    nxt = q.search_body(F, KEYWORD, text=None, clauses=[], size=51, pit_id="P1", keep_alive="5m",
                        search_after=[1234, 77], count=True)
    assert nxt["search_after"] == [1234, 77] and nxt["query"] == {"match_all": {}}
    assert nxt["track_total_hits"] is True and "from" not in nxt


def test_tiebreaker_follows_the_engine_version():
    assert q.tiebreaker("3.3.0") == "_shard_doc" and q.tiebreaker("3.10.1") == "_shard_doc"
    assert q.tiebreaker("2.19.1") == "_id" and q.tiebreaker("3.2.0") == "_id" and q.tiebreaker("weird") == "_id"
    body = q.search_body(F, KEYWORD, text=None, clauses=[], size=2, pit_id="P", keep_alive="5m", search_after=None,
                         count=False, tiebreak="_id")
    assert body["sort"] == [{"@timestamp": {"order": "desc"}}, {"_id": {"order": "desc"}}]
    assert body["track_total_hits"] is False


def test_trace_clause_is_term_or_match_phrase():
    assert q.exact_clause(KEYWORD, "trace_id", F, [TID]) == {"term": {"trace_id": TID}}
    phrase = q.resolve_mapping(F, fixture_mapping())
    assert q.exact_clause(phrase, "trace_id", F, [TID]) == {"match_phrase": {"trace_id": TID}}
    assert q.exact_clause(phrase, "trace_id", F, [TID, NEAR_TID]) == {"bool": {"should": [
        {"match_phrase": {"trace_id": TID}}, {"match_phrase": {"trace_id": NEAR_TID}}], "minimum_should_match": 1}}


def test_stats_body():
    body = q.stats_body(F, KEYWORD, group_by="service", interval_ms=300_000, start_ms=0, end_ms=3_600_000,
                        service=None, levels=["ERROR"])
    assert body == {
        "size": 0, "track_total_hits": True,
        "query": {"bool": {"filter": [
            {"terms": {"level": ["ERROR", "error", "Error", "ERR", "err", "Err"]}},
            {"range": {"@timestamp": {"gte": "1970-01-01T00:00:00.000Z", "lte": "1970-01-01T01:00:00.000Z"}}}]}},
        "aggs": {"groups": {"terms": {"field": "service", "size": 200}, "aggs": {
            "buckets": {"date_histogram": {"field": "@timestamp", "fixed_interval": "300000ms", "min_doc_count": 0,
                                           "extended_bounds": {"min": 0, "max": 3_600_000}}},
            "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}}}}},
    }
    with pytest.raises(InvalidInput, match="keyword"):
        q.stats_body(F, q.Mapping(phrase_only={"service"}), group_by="service", interval_ms=1000, start_ms=0,
                     end_ms=1, service=None, levels=None)


# --------------------------------------------------------------------------- bodies as sent by the tools


async def test_search_logs_sends_pit_then_search_after_and_closes_the_pit():
    stub = Stub(fixture_mapping(),
                {"pit_id": "PIT-1"},
                hits(hit("2026-11-21T14:30:00.000Z", "b", sort=[2, 9]),
                     hit("2026-11-21T14:20:00.000Z", "a", sort=[1, 8]), total=2),
                {"pit_id": "PIT-2", **hits(hit("2026-11-21T14:20:00.000Z", "a", sort=[1, 8]), total=2)})
    tools = LogTools(Settings(), store=OpenSearchLogs(stub, "cwl*"))
    page1 = await tools.search_logs(query="timeout NOT retry", level="error", start=T0.isoformat(),
                                    end=T1.isoformat(), limit=1)
    assert [c[0] for c in stub.calls] == ["create_pit", "search"]
    assert stub.calls[0][1] == {"index": "cwl*", "keep_alive": "5m"}
    assert stub.calls[1][1] == {"body": {
        "size": 2,
        "query": {"bool": {
            "filter": [{"terms": {"level": ["ERROR", "error", "Error", "ERR", "err", "Err"]}},
                       {"range": {"@timestamp": {"gte": "2026-11-21T14:00:00.000Z",
                                                 "lte": "2026-11-21T15:00:00.000Z"}}}],
            "must": [{"simple_query_string": {"query": "(timeout +-retry)", "fields": ["message"],
                                              "default_operator": "and", "flags": q.SQS_FLAGS}}]}},
        "sort": [{"@timestamp": {"order": "desc"}}, {"_id": {"order": "desc"}}],  # OpenSearch < 3.3
        "track_total_hits": 10_000,
        "pit": {"id": "PIT-1", "keep_alive": "5m"},
    }}
    assert page1.total == 2 and page1.returned == 1 and page1.next_cursor
    assert _decode(page1.next_cursor) == {"p": "PIT-1", "a": [2, 9]}
    page2 = await tools.search_logs(query="timeout NOT retry", level="error", start=T0.isoformat(),
                                    end=T1.isoformat(), limit=1, cursor=page1.next_cursor)
    name, sent = stub.calls[2]
    assert name == "search" and sent["body"]["search_after"] == [2, 9] and "from" not in sent["body"]
    assert sent["body"]["pit"] == {"id": "PIT-1", "keep_alive": "5m"}
    assert page2.next_cursor is None and [h.message for h in page2.hits] == ["a"]
    assert stub.calls[3] == ("delete_pit", {"body": {"pit_id": ["PIT-2"]}})  # the answer's (newer) PIT id


async def test_get_trace_on_a_text_only_trace_id_keeps_exact_ids_only():
    """UUIDs that share segments: a phrase match may return the other trace; it never shows."""
    stub = Stub(fixture_mapping(), hits(
        hit("2026-11-21T14:00:00.000Z", "mine 1", level="INFO"),
        hit("2026-11-21T14:00:01.000Z", "other", trace=NEAR_TID),
        hit("2026-11-21T14:00:02.000Z", "mine 2")))
    tools = LogTools(Settings(), store=OpenSearchLogs(stub, "cwl*"))
    tr = await tools.get_trace(TID)
    assert stub.calls == [("search", {"index": "cwl*", "body": {
        "size": 2000, "query": {"bool": {"filter": [{"match_phrase": {"trace_id": TID}}]}},
        "sort": [{"@timestamp": {"order": "asc"}}], "track_total_hits": True}})]
    assert [ln.message for ln in tr.lines] == ["mine 1", "mine 2"] and tr.line_count == 2
    assert tr.first_error.message == "mine 2"
    assert any("map trace_id as keyword" in n for n in tr.notes)


async def test_error_lines_send_one_msearch_and_never_mix_traces():
    stub = Stub(KEYWORD_MAPPING := {"i": {"mappings": {"properties": {
        "@timestamp": {"type": "date"}, "trace_id": {"type": "keyword"}, "level": {"type": "keyword"}}}}},
        {"responses": [hits(hit("2026-11-21T14:00:00.000Z", "boom"),
                            hit("2026-11-21T14:00:01.000Z", "x", trace=NEAR_TID)),
                       {"error": {"type": "index_not_found_exception"}}]})
    assert KEYWORD_MAPPING
    tools = LogTools(Settings(), store=OpenSearchLogs(stub, "cwl*"))
    out = await tools.error_lines([TID, NEAR_TID])
    assert out == {TID: [{"timestamp": "2026-11-21T14:00:00.000Z", "service": "order-processor", "level": "ERROR",
                          "message": "boom", "event_id": None}]}
    name, sent = stub.calls[0]
    errors = {"terms": {"level": ["ERROR", "error", "Error", "ERR", "err", "Err", "CRITICAL", "critical", "Critical",
                                  "CRIT", "crit", "Crit", "FATAL", "fatal", "Fatal", "EMERG", "emerg", "Emerg"]}}
    assert name == "msearch" and sent["body"] == [
        {"index": "cwl*"}, {"size": 20, "query": {"bool": {"filter": [{"term": {"trace_id": TID}}, errors]}},
                            "sort": [{"@timestamp": {"order": "asc"}}], "track_total_hits": True},
        {"index": "cwl*"}, {"size": 20, "query": {"bool": {"filter": [{"term": {"trace_id": NEAR_TID}}, errors]}},
                            "sort": [{"@timestamp": {"order": "asc"}}], "track_total_hits": True},
    ]


async def test_log_stats_sends_one_aggregation_and_merges_level_spellings():
    bucket = lambda ms, n: {"key": ms, "doc_count": n}  # noqa: E731
    edges = [hits(hit("2026-11-21T13:00:00.000Z", "old")), hits(hit("2026-11-21T16:00:00.000Z", "new"))]
    stub = Stub(fixture_mapping(), *edges, {"hits": {"total": {"value": 6, "relation": "eq"}},
                                            "aggregations": {"groups": {
        "buckets": [
            {"key": "ERROR", "doc_count": 4, "buckets": {"buckets": [bucket(1_795_269_600_000, 1),
                                                                     bucket(1_795_271_400_000, 3)]},
             "first": {"value": 1_795_269_700_000}, "last": {"value": 1_795_271_500_000}},
            {"key": "error", "doc_count": 2, "buckets": {"buckets": [bucket(1_795_271_400_000, 2)]},
             "first": {"value": 1_795_271_450_000}, "last": {"value": 1_795_271_460_000}},
        ]}}})
    tools = LogTools(Settings(), store=OpenSearchLogs(stub, "cwl*"))
    res = await tools.log_stats(start=T0.isoformat(), end=T1.isoformat(), interval="30m")
    sent = stub.calls[-1][1]["body"]
    assert sent["aggs"]["groups"]["aggs"]["buckets"]["date_histogram"]["fixed_interval"] == "1800000ms"
    assert sent["aggs"]["groups"]["terms"] == {"field": "level", "size": 200}
    assert [(g.key, g.total, g.counts) for g in res.groups] == [("ERROR", 6, [1, 5, 0])]
    assert res.groups[0].first_seen == "2026-11-21T14:01:40.000Z"
    assert res.groups[0].last_seen == "2026-11-21T14:31:40.000Z"


# --------------------------------------------------------------------------- errors


def _err(cls: type[osx.TransportError], status: Any, info: Any) -> osx.TransportError:
    return cls(status, "error", info)


@pytest.mark.parametrize(("exc", "kind", "text"), [
    (_err(osx.RequestError, 400, {"error": {"root_cause": [{"type": "query_shard_exception",
                                                            "reason": "Failed to parse query [a AND]"}]}}),
     InvalidInput, "query_shard_exception: Failed to parse query [a AND]"),
    (_err(osx.NotFoundError, 404, {"error": {"type": "index_not_found_exception", "reason": "no such index [cwl]"}}),
     NotFound, "index_not_found_exception: no such index [cwl]"),
    (_err(osx.TransportError, 429, {"error": {"type": "es_rejected_execution_exception",
                                              "reason": "rejected execution"}}),
     BackendUnavailable, "throttling requests (429) for search: es_rejected_execution_exception: rejected execution"),
    (_err(osx.AuthenticationException, 401, {"error": "Unauthorized"}), OpsError, "refused search (401): Unauthorized"),
    (osx.ConnectionError("N/A", "Connection refused", None), BackendUnavailable, "Cannot reach OpenSearch"),
])
def test_engine_errors_quote_the_engines_reason(exc, kind, text):
    err = map_error(exc, url="https://user:secret@search.example:9200", index="cwl*", what="search")
    assert type(err) is kind and text in str(err) and "secret" not in str(err)


async def test_an_engine_error_is_a_tool_error_not_a_crash():
    stub = Stub(fixture_mapping(), {"pit_id": "P"}, _err(osx.RequestError, 400, {"error": {
        "type": "search_phase_execution_exception", "reason": "all shards failed",
        "root_cause": [{"type": "parse_exception", "reason": "Cannot parse 'x'"}]}}))
    tools = LogTools(Settings(), store=OpenSearchLogs(stub, "cwl*"))
    with pytest.raises(InvalidInput, match="parse_exception: Cannot parse 'x'"):
        await tools.search_logs(query="x")


def test_cursor_garbage_is_invalid_input():
    for bad in ("nope", "eyJ4IjoxfQ", "%%%"):
        with pytest.raises(InvalidInput, match="cursor"):
            _decode(bad)


def test_redact_drops_credentials():
    assert redact("https://u:p@h.example:9200/x") == "https://h.example:9200/x"
    assert redact("http://h:9200") == "http://h:9200"


# --------------------------------------------------------------------------- loader


@pytest.mark.parametrize(("line", "expected"), [
    ({"@timestamp": "2026-11-21T14:00:00Z", "level": "warning", "service": "a", "message": "m", "trace_id": "t"},
     {"@timestamp": "2026-11-21T14:00:00.000Z", "level": "WARN", "service": "a", "message": "m", "trace_id": "t"}),
    ({"timestamp": 1795269600, "severity": "err", "svc": "b", "msg": "m", "traceId": "t", "eventId": "e", "x": 1},
     {"@timestamp": "2026-11-21T14:00:00.000Z", "level": "ERROR", "service": "b", "message": "m", "trace_id": "t",
      "event_id": "e", "x": 1}),
    ({"@timestamp": "2026-11-21T14:00:00Z", "logger": "c", "message": "m"},
     {"@timestamp": "2026-11-21T14:00:00.000Z", "level": "UNKNOWN", "service": "c", "message": "m", "logger": "c"}),
])
def test_loader_maps_common_field_names(line, expected):
    assert to_document(json.dumps(line), F) == expected


def test_loader_rejects_bad_lines_with_a_reason():
    for bad, why in (("[1]", "not a JSON object"), ("{", "invalid JSON"), ('{"message": "m"}', "timestamp"),
                     ('{"@timestamp": "2026-11-21T14:00:00Z"}', "no message")):
        with pytest.raises(ValueError, match=why):
            to_document(bad, F)


def test_default_index_name():
    assert default_index("cwl*") == "cwl-opsmcp" and default_index("logs-app") == "logs-app"


# --------------------------------------------------------------------------- doctor


def test_doctor_checks_the_selected_engine_and_recommends_keyword_ids(tmp_path, monkeypatch, capsys):
    """`opsmcp doctor` with OPSMCP_LOG_BACKEND=opensearch (openmock): a missing index is a
    failure with the fix; the fixture template's text-only trace_id is a warning."""
    import openmock
    from openmock import FakeIndicesClient

    from opsmcp.cli import main

    url = "http://doctor.invalid:9200"
    monkeypatch.setenv("OPSMCP_LOG_BACKEND", "opensearch")
    monkeypatch.setenv("OPSMCP_OPENSEARCH_URL", url)
    monkeypatch.setenv("OPSMCP_OPENSEARCH_INDEX", "cwl-doctor")
    openmock.OPEN_INSTANCES.clear()
    with patch("opensearchpy.OpenSearch", openmock._get_openmock), \
            patch("opensearchpy.client.indices.IndicesClient", FakeIndicesClient):
        main(["doctor", "--toolsets", "logs", "--data-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert "FAIL opensearch index" in out and "opsmcp logs load --to opensearch" in out
        fake = openmock._get_openmock(hosts=[url])
        fake.indices.create(index="cwl-doctor", body={"mappings": fixture_mapping()["cwl-2026.11.21"]["mappings"]})
        fake.index(index="cwl-doctor", body={"@timestamp": "2026-11-21T14:00:00.000Z", "level": "INFO",
                                             "service": "s", "message": "m", "trace_id": TID})
        main(["doctor", "--toolsets", "logs", "--data-dir", str(tmp_path)])
        out = capsys.readouterr().out
    assert "OK   opensearch: reachable at http://doctor.invalid:9200" in out
    assert "OK   opensearch index: 'cwl-doctor' matches 1 index(es)" in out
    assert "WARN" in out and "trace_id is a text field without a keyword sub-field" in out
    assert "OK   opensearch query: newest line at 2026-11-21T14:00:00.000Z" in out


def test_opensearch_without_url_disables_the_logs_toolset_with_the_reason(tmp_path):
    from opsmcp.server import build_server

    _, runtime = build_server(Settings(toolsets=["logs"], log_backend="opensearch", data_dir=tmp_path))
    assert "OPSMCP_OPENSEARCH_URL is not set" in runtime.disabled["logs"]
