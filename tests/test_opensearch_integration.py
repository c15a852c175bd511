"""Against a real OpenSearch cluster (``OPSMCP_TEST_OPENSEARCH_URL``; skipped otherwise).

What openmock cannot check: the real analyzer on a text-only ``trace_id`` (the fixture
template's mapping: ids that share UUID segments must still never mix), real engine
errors quoted in tool errors, and ``opsmcp doctor``'s mapping advice. The behavioural
module (tests/test_log_backends.py) runs its full-text, stats and paging tests on the
same cluster.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from opsmcp.backends.opensearch import OpenSearchLogs, load_jsonl
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound
from opsmcp.toolsets.logs import LogTools

URL = os.environ.get("OPSMCP_TEST_OPENSEARCH_URL")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not URL, reason="no real OpenSearch cluster: set OPSMCP_TEST_OPENSEARCH_URL "
                                       "(e.g. http://localhost:9200) to run these tests against one"),
]
TEMPLATE = Path(__file__).resolve().parent / "fixtures" / "ops_agent" / "log_index_template.json"
IDS = ("ce79cdee-0e35-4d47-84b0-9d3247266382", "ce79cdee-0e35-4d47-84b0-9d3247266383",
       "ce79cdee-0e35-4d47-84b0-000000000000")


@pytest.fixture
def text_id_index(tmp_path):
    """An index with the fixture template's mapping (trace_id: text), holding one line per id."""
    from opsmcp.backends.opensearch.client import make_client

    settings = Settings(log_backend="opensearch", opensearch_url=URL,
                        opensearch_index=f"cwl-opsmcp-text-{uuid.uuid4().hex[:8]}")
    client = make_client(settings)
    mappings = json.loads(TEMPLATE.read_text())["template"]["mappings"]
    client.indices.create(index=settings.opensearch_index, body={"mappings": mappings})
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text("".join(json.dumps({"@timestamp": f"2026-11-21T14:00:0{i}Z", "level": "ERROR", "service": "s",
                                         "message": f"line {i}", "trace_id": tid}) + "\n" for i, tid in enumerate(IDS)))
    report = load_jsonl(client, settings.opensearch_index, [str(jsonl)], create=False)
    assert report.loaded == 3
    try:
        yield settings, OpenSearchLogs(client, settings.opensearch_index, url=URL or "")
    finally:
        client.indices.delete(index=settings.opensearch_index)
        client.close()


async def test_text_only_trace_ids_never_mix_on_the_real_analyzer(text_id_index):
    settings, backend = text_id_index
    tools = LogTools(settings, store=backend)
    for tid in IDS:
        trace = await tools.get_trace(tid)
        assert [ln.trace_id for ln in trace.lines] == [tid]
        assert any("keyword" in n for n in trace.notes)
    errors = await tools.error_lines(list(IDS))
    assert {t: [e["message"] for e in v] for t, v in errors.items()} == {t: [f"line {i}"] for i, t in enumerate(IDS)}
    with pytest.raises(NotFound):
        await tools.get_trace("ce79cdee")
    checks = backend.check()
    assert any(c.warning and "trace_id" in c.detail for c in checks)


async def test_missing_index_is_empty_and_bad_field_is_an_engine_error(tmp_path):
    settings = Settings(log_backend="opensearch", opensearch_url=URL, opensearch_index="opsmcp-no-such-index-*")
    tools = LogTools(settings)
    empty = await tools.search_logs(service="x")
    assert empty.total == 0
    broken = Settings(log_backend="opensearch", opensearch_url=URL, opensearch_index="opsmcp-no-such-index",
                      opensearch_fields={"timestamp": "message"})
    with pytest.raises((NotFound, InvalidInput)) as exc:
        await LogTools(broken).log_stats(start="-1h")
    assert "OpenSearch" in str(exc.value)
