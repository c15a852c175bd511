"""Alertmanager alerts: the webhook route, the alert store and the alerts toolset.

The end-to-end test runs a real Prometheus (backfilled history and two alerting rules that
fire on it) and a real Alertmanager (Debian's packages) whose webhook receiver posts to
opsmcp's HTTP app served by uvicorn, then restarts opsmcp on the same data dir.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest

import promstack
from helpers import ToolFailed, call
from opsmcp.backends.alertstore import DynamoAlertStore, FileAlertStore, IncomingAlert, parse_webhook
from opsmcp.backends.aws import AwsClients
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput
from opsmcp.times import iso

TOKEN = "test-token-4b1d"
WEBHOOK = "webhook-token-for-tests-0123456789"  # Alertmanager's own credential (OPSMCP_WEBHOOK_TOKEN)
RULES = """
groups:
  - name: incident
    rules:
      - alert: DLQGrowing
        expr: max_over_time(sqs_dlq_depth[7h]) > 500
        labels: {severity: critical}
        annotations: {summary: "DLQ {{ $labels.queue }} holds over 500 messages"}
      - alert: ErrorRateHigh
        expr: max_over_time(app_errors_per_second[7h]) > 1
        labels: {severity: warning}
        annotations: {summary: "errors above 1/s"}
"""


def _payload(*alerts: dict, version: str = "4") -> dict:
    return {"version": version, "status": "firing", "receiver": "opsmcp", "groupKey": "{}", "alerts": list(alerts)}


def _alert(fp: str, status: str = "firing", **labels: str) -> dict:
    return {"status": status, "fingerprint": fp, "labels": {"alertname": "A", **labels},
            "annotations": {"summary": f"alert {fp}"}, "startsAt": "2026-12-01T08:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph"}


def _wait(check, budget: float = 90.0):
    """Poll ``check()`` until it returns a truthy value or ``budget`` seconds pass."""
    deadline = time.monotonic() + budget
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_parse_webhook_validates_and_normalises():
    alerts = parse_webhook(_payload(_alert("abc"), {"status": "resolved", "labels": {"alertname": "B"},
                                                   "endsAt": "2026-12-01T09:00:00Z"}))
    assert alerts[0].starts_at == "2026-12-01T08:00:00.123Z" and alerts[0].ends_at is None
    assert alerts[1].fingerprint and len(alerts[1].fingerprint) == 16  # derived from labels
    assert alerts[1].ends_at == "2026-12-01T09:00:00.000Z"
    for bad in ([], _payload(version="3"), {"version": "4"}, _payload({"status": "pending"})):
        with pytest.raises(InvalidInput):
            parse_webhook(bad)


async def test_file_store_dedups_and_drops_oldest_resolved_first(tmp_path):
    store = FileAlertStore(tmp_path / "alerts.json", max_stored=10)
    [change] = await store.record(parse_webhook(_payload(_alert("f0"))))
    assert change.kind == "new"
    [change] = await store.record(parse_webhook(_payload(_alert("f0"))))
    assert change.kind == "repeat" and change.alert.received_count == 2
    [change] = await store.record(parse_webhook(_payload(_alert("f0", status="resolved"))))
    assert change.kind == "resolved"
    for i in range(1, 8):  # r1..r7 resolved, oldest first
        await store.record(parse_webhook(_payload(_alert(f"r{i}", status="resolved"))))
    for i in range(5):
        await store.record(parse_webhook(_payload(_alert(f"x{i}"))))
    kept = {a.fingerprint for a in await store.all()}
    assert len(kept) == 10
    assert {f"x{i}" for i in range(5)} <= kept  # every firing alert kept
    assert not {"f0", "r1", "r2"} & kept  # the three oldest resolved dropped
    again = FileAlertStore(tmp_path / "alerts.json", max_stored=10)  # persisted
    assert {a.fingerprint for a in await again.all()} == kept


def _huge(fp: str, labels: int = 250, chars: int = 3_990) -> dict:
    """The probe's alert: ``labels`` labels of ``chars`` characters each (and a long annotation)."""
    big = {f"label_{i:03d}": "v" * chars for i in range(labels)}
    return {"status": "firing", "fingerprint": fp, "labels": {"alertname": f"Huge{fp}", **big},
            "annotations": {"summary": "s" * 10_000, "description": "d"}, "startsAt": "2026-12-01T08:00:00Z"}


async def test_alert_store_bounds_each_alert_and_its_bytes_and_appends_what_changed(tmp_path):
    """Regression (issue 19 item 7): the store capped the count, not the size: 120 posts of
    an alert with 250 labels x 3,990 characters made alerts.json 121 MB, and every post
    rewrote (and fsynced) the whole file. Now each alert is bounded (labels, characters per
    label and annotation, what was cut is named), the store keeps at most max_bytes of
    records, and a post appends only the records it changed."""
    from opsmcp.backends.alertstore import MAX_ANNOTATION_CHARS, MAX_LABEL_CHARS, MAX_LABELS

    path = tmp_path / "alerts.json"
    store = FileAlertStore(path, max_stored=2000, max_bytes=1024 * 1024)
    for i in range(120):
        await store.record(parse_webhook(_payload(_huge(f"h{i:03d}"))))
    kept = await store.all()
    newest = await store.get("h119")
    assert newest is not None and len(newest.labels) == MAX_LABELS and newest.labels["alertname"] == "Hugeh119"
    assert max(len(v) for v in newest.labels.values()) == MAX_LABEL_CHARS
    assert len(newest.annotations["summary"]) == MAX_ANNOTATION_CHARS and newest.annotations["description"] == "d"
    assert newest.cut == ["labels: kept 64 of 251", "labels: 63 value(s) cut to 512 characters",
                          "annotations: 1 value(s) cut to 4000 characters"]
    records = sum(len(json.dumps({"put": a.model_dump()}, separators=(",", ":"))) + 1 for a in kept)
    assert records <= 1024 * 1024 and 20 <= len(kept) < 120  # the oldest went first
    assert "h000" not in {a.fingerprint for a in kept}
    assert path.stat().st_size <= 2 * records + (1 << 20) + 100  # rewritten when it doubles
    # one more post appends its own record only: the file is not rewritten
    before = path.stat()
    [change] = await store.record(parse_webhook(_payload(_alert("small"))))
    after = path.stat()
    line = len(json.dumps({"put": change.alert.model_dump()}, separators=(",", ":"))) + 1
    assert after.st_ino == before.st_ino and after.st_size - before.st_size == line
    # a restart reads the same alerts; a torn last line (a crash mid-append) is skipped
    with path.open("ab") as f:
        f.write(b'{"put": {"fingerprint": "torn", "sta')
    again = FileAlertStore(path, max_stored=2000, max_bytes=1024 * 1024)
    assert {a.fingerprint: a for a in (await again.all())} == {a.fingerprint: a for a in (await store.all())}


async def test_file_store_reads_the_version_1_document_and_rewrites_it(tmp_path):
    path = tmp_path / "alerts.json"
    old = FileAlertStore(tmp_path / "scratch.json")
    [change] = await old.record(parse_webhook(_payload(_alert("v1"))))
    path.write_text(json.dumps({"version": 1, "alerts": [change.alert.model_dump(exclude={"cut"})]}))
    store = FileAlertStore(path)
    assert [a.fingerprint for a in (await store.all())] == ["v1"]
    await store.record(parse_webhook(_payload(_alert("v2"))))
    assert path.read_text().splitlines()[0] == '{"opsmcp_alert_store":2}'
    assert sorted(a.fingerprint for a in (await FileAlertStore(path).all())) == ["v1", "v2"]


async def test_dynamo_store_on_moto(fresh_moto):
    settings = Settings(aws_endpoint_url=fresh_moto, aws_region="us-east-1")
    boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1").create_table(
        TableName="alerts", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "fingerprint", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "fingerprint", "AttributeType": "S"}],
    )
    store = DynamoAlertStore(AwsClients(settings), "alerts", max_stored=10)
    changes = await store.record(parse_webhook(_payload(_alert("d1", severity="critical"), _alert("d2"))))
    kinds = [c.kind for c in changes]
    assert kinds == ["new", "new"]
    [change] = await store.record(parse_webhook(_payload(_alert("d1", status="resolved", severity="critical"))))
    assert change.kind == "resolved" and change.alert.received_count == 2
    got = await store.get("d1")
    assert got is not None and got.status == "resolved" and got.labels["severity"] == "critical"
    assert got.received_count == 2 and got.first_received <= got.last_received
    assert {a.fingerprint for a in await store.all()} == {"d1", "d2"}


async def test_tools_filter_sort_and_find_by_prefix(tmp_path):
    from mcp import Client

    from opsmcp.server import build_server

    settings = Settings(data_dir=tmp_path, alertmanager_url="http://127.0.0.1:9", toolsets=["alerts"])
    server, runtime = build_server(settings)
    store = runtime.alerts
    first = parse_webhook(_payload(_alert("aaaa1111", severity="critical")))[0]
    await store.record([IncomingAlert(**first.model_dump()),
                        *parse_webhook(_payload(_alert("bbbb2222", status="resolved", severity="warning")))])
    async with Client(server) as client:
        out = await call(client, "list_alerts")
        assert [a["fingerprint"] for a in out["alerts"]] == ["aaaa1111", "bbbb2222"] and out["firing"] == 1
        out = await call(client, "list_alerts", status="resolved")
        assert [a["fingerprint"] for a in out["alerts"]] == ["bbbb2222"]
        out = await call(client, "list_alerts", severity="critical", since="-1h")
        assert [a["fingerprint"] for a in out["alerts"]] == ["aaaa1111"]
        out = await call(client, "list_alerts", since=iso(datetime.now(UTC) + timedelta(hours=1)))
        assert out["total"] == 0
        got = await call(client, "get_alert", fingerprint="aaaa")
        assert got["alert"]["generator_url"] == "http://prometheus/graph"
        with pytest.raises(ToolFailed) as exc:
            await call(client, "get_alert", fingerprint="aaaa1112")
        assert "aaaa1111" in str(exc.value)
        with pytest.raises(ToolFailed):
            await call(client, "list_alerts", status="pending")


def test_webhook_route_auth_size_and_shape(tmp_path):
    settings = Settings(data_dir=tmp_path, alertmanager_url="http://127.0.0.1:9", toolsets=["alerts"],
                        http_token=TOKEN, webhook_token=WEBHOOK, alerts_max_payload_bytes=4096)
    with promstack.OpsmcpHttp(settings) as ops:
        url = f"{ops.url}/webhooks/alertmanager"
        auth = {"Authorization": f"Bearer {WEBHOOK}"}
        assert httpx.post(url, json=_payload(_alert("w1"))).status_code == 401
        ok = httpx.post(url, json=_payload(_alert("w1")), headers=auth)
        assert ok.status_code == 200 and ok.json() == {"received": 1, "new": 1}
        assert httpx.post(url, json=_payload(_alert("w1")), headers=auth).json() == {"received": 1, "repeat": 1}
        big = _payload(*[_alert(f"b{i}") for i in range(100)])
        assert httpx.post(url, json=big, headers=auth).status_code == 413
        assert httpx.post(url, content=b"{", headers=auth).status_code == 400
        assert httpx.post(url, json=_payload(_alert("v3"), version="3"), headers=auth).status_code == 400
    settings = Settings(data_dir=tmp_path, toolsets=["alerts"])  # alerts not configured
    with promstack.OpsmcpHttp(settings) as ops:
        r = httpx.post(f"{ops.url}/webhooks/alertmanager", json=_payload(_alert("w1")))
        assert r.status_code == 404 and "OPSMCP_ALERTMANAGER_URL" in r.json()["error"]


def test_webhook_takes_alertmanagers_own_credential_only(tmp_path, capsys):
    """Regression (issue 19 item 5): any identity with any scope could post alerts (an
    ops:read token did). Now only OPSMCP_WEBHOOK_TOKEN (bearer, or basic-auth password,
    compared in constant time) or a token with scope alerts:write may; nothing else is stored."""
    import base64

    from opsmcp.cli import main as cli_main

    tokens = tmp_path / "tokens.jsonl"

    def add(subject: str, scopes: str) -> str:
        assert cli_main(["token", "add", subject, "--scopes", scopes, "--file", str(tokens)]) == 0
        return capsys.readouterr().out.strip()

    reader, writer, am_token = add("alice", "ops:read"), add("bob", "ops:read,ops:write"), add("am", "alerts:write")
    settings = Settings(data_dir=tmp_path, alertmanager_url="http://127.0.0.1:9", toolsets=["alerts"],
                        http_token=TOKEN, tokens_file=tokens, webhook_token=WEBHOOK)
    basic = base64.b64encode(f"alertmanager:{WEBHOOK}".encode()).decode()
    with promstack.OpsmcpHttp(settings) as ops:
        url = f"{ops.url}/webhooks/alertmanager"
        store = ops.runtime.alerts
        assert isinstance(store, FileAlertStore)

        def post(fp: str, authorization: str | None) -> int:
            headers = {"Authorization": authorization} if authorization else {}
            return httpx.post(url, json=_payload(_alert(fp)), headers=headers, timeout=10).status_code

        refused = {"none": (None, 401), "ops:read": (f"Bearer {reader}", 403),
                   "ops:read+write": (f"Bearer {writer}", 403),
                   "shared ops token": (f"Bearer {TOKEN}", 403), "wrong webhook token": (f"Bearer {WEBHOOK}x", 401),
                   "webhook token prefix": (f"Bearer {WEBHOOK[:-1]}", 401),
                   "basic, wrong password": ("Basic " + base64.b64encode(b"alertmanager:nope").decode(), 401),
                   "basic, not base64": ("Basic %%%", 401)}
        for i, (why, (header, status)) in enumerate(refused.items()):
            assert post(f"r{i}", header) == status, why
        assert store.snapshot() == []
        assert post("ok1", f"Bearer {WEBHOOK}") == 200
        assert post("ok2", f"bearer {WEBHOOK}") == 200
        assert post("ok3", f"Basic {basic}") == 200
        assert post("ok4", f"Bearer {am_token}") == 200
        assert sorted(a.fingerprint for a in store.snapshot()) == ["ok1", "ok2", "ok3", "ok4"]
        # Alertmanager's credentials open nothing else
        for header in (f"Bearer {WEBHOOK}", f"Bearer {am_token}"):
            got = httpx.get(f"{ops.url}/metrics", headers={"Authorization": header}, timeout=10)
            assert got.status_code in (401, 403), header
    # no authentication configured at all: an open local server, the webhook too; with only a
    # webhook token configured, the webhook needs it
    with promstack.OpsmcpHttp(Settings(data_dir=tmp_path / "open", alertmanager_url="http://127.0.0.1:9",
                                       toolsets=["alerts"])) as ops:
        assert httpx.post(f"{ops.url}/webhooks/alertmanager", json=_payload(_alert("o1"))).status_code == 200
    with promstack.OpsmcpHttp(Settings(data_dir=tmp_path / "hook", alertmanager_url="http://127.0.0.1:9",
                                       toolsets=["alerts"], webhook_token=WEBHOOK)) as ops:
        hook = f"{ops.url}/webhooks/alertmanager"
        assert httpx.post(hook, json=_payload(_alert("h1"))).status_code == 401
        assert httpx.post(hook, json=_payload(_alert("h1")), headers={"Authorization": "Bearer x"}).status_code == 403
        assert httpx.post(hook, json=_payload(_alert("h1")),
                          headers={"Authorization": f"Bearer {WEBHOOK}"}).status_code == 200


@pytest.mark.skipif(not (promstack.PROMETHEUS and promstack.ALERTMANAGER), reason=promstack.MISSING)
async def test_real_alertmanager_fed_by_prometheus_dedups_and_persists(tmp_path):
    from mcp import Client

    from opsmcp.server import build_server

    am_port = promstack.free_port()
    settings = Settings(data_dir=tmp_path / "opsmcp", alertmanager_url=f"http://127.0.0.1:{am_port}",
                        toolsets=["alerts"], http_token=TOKEN, webhook_token=WEBHOOK)
    with promstack.OpsmcpHttp(settings) as ops:
        am = promstack.start_alertmanager(tmp_path / "am", f"{ops.url}/webhooks/alertmanager", WEBHOOK, port=am_port)
        try:
            end = int(time.time()) // 60 * 60 - 120
            prom, _ = promstack.start_prometheus(tmp_path / "prom", end=end, rules=RULES,
                                                 alertmanager=f"127.0.0.1:{am_port}")
            try:
                store = ops.runtime.alerts
                # both rules fire; Alertmanager re-sends the group every 2 s: repeats, one record each
                got = _wait(lambda: (len(store.snapshot()) == 2
                                     and all(a.received_count >= 2 for a in store.snapshot())))
                assert got, f"alerts received: {[a.model_dump() for a in store.snapshot()]}"
                names = {a.labels["alertname"]: a for a in store.snapshot()}
                assert set(names) == {"DLQGrowing", "ErrorRateHigh"}
                dlq = names["DLQGrowing"]
                assert dlq.status == "firing" and dlq.labels["severity"] == "critical"
                assert dlq.annotations["summary"] == "DLQ order-queue-dlq holds over 500 messages"
                assert dlq.generator_url and dlq.generator_url.startswith("http")
                # a manual alert through Alertmanager's API, then resolved
                start = datetime.now(UTC) - timedelta(minutes=1)
                manual = {"labels": {"alertname": "ManualCheck", "severity": "info"}, "startsAt": iso(start)}
                httpx.post(f"{am.url}/api/v2/alerts", json=[manual], timeout=5).raise_for_status()
                assert _wait(lambda: any(a.labels.get("alertname") == "ManualCheck" for a in store.snapshot()))
                resolved = dict(manual, endsAt=iso(datetime.now(UTC) - timedelta(seconds=1)))
                httpx.post(f"{am.url}/api/v2/alerts", json=[resolved], timeout=5).raise_for_status()
                assert _wait(lambda: any(a.labels.get("alertname") == "ManualCheck" and a.status == "resolved"
                                         for a in store.snapshot()))
            finally:
                promstack.stop(prom.proc)
        finally:
            promstack.stop(am.proc)
    published = [e.data for e in ops.runtime.events.latest("alert")]  # the /events feed's history
    new = [e for e in published if e["change"] == "new"]
    changes = {(e["alertname"], e["change"]) for e in published}
    assert {e["alertname"] for e in new} == {"DLQGrowing", "ErrorRateHigh", "ManualCheck"}
    assert ("ManualCheck", "resolved") in changes
    # a new opsmcp process on the same data dir has every alert, counts and state
    before = {a.fingerprint: a for a in await FileAlertStore(settings.data_dir / "alerts.json").all()}
    server, _ = build_server(settings)
    async with Client(server) as client:
        out = await call(client, "list_alerts", limit=10)
        assert out["total"] == 3 and out["firing"] == 2
        fp = next(a["fingerprint"] for a in out["alerts"] if a["alertname"] == "DLQGrowing")
        got = (await call(client, "get_alert", fingerprint=fp))["alert"]
        assert got["received_count"] == before[fp].received_count >= 2
        assert json.dumps(got["labels"], sort_keys=True) == json.dumps(before[fp].labels, sort_keys=True)
