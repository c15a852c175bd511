"""Against a real Loki (``OPSMCP_TEST_LOKI_URL``, e.g. http://localhost:3100; skipped otherwise).

No Loki server installs on this machine, so everything here was written against Loki's
documented API and runs only where one is reachable: what the stand-in
(tests/loki_standin.py) cannot prove — Loki's own LogQL engine running opsmcp's queries
(the ``json``/``drop`` stages, regex line filters, ``count_over_time`` evaluation points
ending each bucket one nanosecond early), its push deduplication and its answers' shapes.
Each run pushes its lines under a label value of its own (``service_name`` =
``opsmcp-test-<random>``), so runs never see each other's lines; Loki has no delete API
for a test to clean up with (the lines age out with the cluster's retention).
Tenant: ``OPSMCP_TEST_LOKI_TENANT`` if the cluster is multi-tenant.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timedelta, UTC

import pytest

from opsmcp.backends.loki import LokiLogs
from opsmcp.backends.loki.client import LokiClient
from opsmcp.backends.loki.load import load_jsonl

URL = os.environ.get("OPSMCP_TEST_LOKI_URL")
pytestmark = pytest.mark.skipif(not URL, reason="no real Loki: set OPSMCP_TEST_LOKI_URL (e.g. http://localhost:3100) "
                                                "to run these tests against one")
TID = "ce79cdee-0e35-4d47-84b0-9d3247266382"


def _client() -> LokiClient:
    tenant = os.environ.get("OPSMCP_TEST_LOKI_TENANT")
    return LokiClient(URL or "", timeout=30, headers={"X-Scope-OrgID": tenant} if tenant else {})


def test_a_real_loki_runs_every_query(tmp_path):
    service = f"opsmcp-test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    docs = [{"@timestamp": (now - timedelta(seconds=i)).isoformat(), "service": service,
             "level": "ERROR" if i % 4 == 0 else "INFO", "message": f"step {i} Database connection timeout"
             if i % 4 == 0 else f"step {i} fine", "trace_id": TID if i < 8 else f"{TID[:-1]}{i % 10}"}
            for i in range(40)] + [{"@timestamp": now.isoformat(), "service": service, "message": "not json"}]
    path = tmp_path / "l.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    client = _client()
    assert load_jsonl(client, [str(path)]).loaded == 41
    assert load_jsonl(client, [str(path)]).loaded == 41  # pushed twice: Loki keeps one of each
    backend = LokiLogs(client, selector=f'{{service_name="{service}"}}')
    lo, hi = now - timedelta(minutes=2), now
    deadline = time.monotonic() + 60
    while backend.search(start=lo, end=hi).total < 41 and time.monotonic() < deadline:
        time.sleep(1)  # ingested lines become queryable within a moment
    assert backend.search(start=lo, end=hi).total == 41
    errors = backend.search(level="error", start=lo, end=hi, limit=500)
    assert errors.total == 10 and {h.level for h in errors.hits} == {"ERROR"}
    words = backend.search(query="database timeout", start=lo, end=hi, limit=500)
    assert words.total == 10
    trace = backend.get_trace(TID)
    assert trace.line_count == 8 and {ln.trace_id for ln in trace.lines} == {TID}
    assert [e["level"] for e in backend.error_lines([TID])[TID]] == ["ERROR", "ERROR"]
    stats = backend.stats(lo, hi, "level", 60)
    assert {g.key: g.total for g in stats.groups} == {"INFO": 30, "ERROR": 10, "UNKNOWN": 1}
    pages, cursor = [], None
    for _ in range(10):
        page = backend.search(start=lo, end=hi, limit=7, cursor=cursor)
        pages += [h.message for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(pages) == 41 == len(set(pages))
    assert all(c.ok for c in backend.check())
    client.close()
