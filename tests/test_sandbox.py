"""The embedded sandbox: in-process seeding, endpoint resolution before clients exist, the
log store shared by one data dir, the banner."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from conftest import call, real_redrive
from opsmcp.config import Settings
from opsmcp.sandbox import Sandbox, banner, start_sandbox


@pytest.fixture
def sandbox_factory(fresh_moto: str) -> Iterator:
    """Start sandboxes (moto servers in this process: they share moto's one state, which
    `fresh_moto` reset); stop them and reset moto's state afterwards."""
    started: list[Sandbox] = []

    def start(data_dir: Path, **overrides) -> Sandbox:
        sandbox = start_sandbox(Settings(data_dir=data_dir, aws_region="us-east-1", **overrides))
        started.append(sandbox)
        return sandbox

    try:
        yield start
    finally:
        for sandbox in started:
            sandbox.stop()
        urllib.request.urlopen(urllib.request.Request(f"{fresh_moto}/moto-api/reset", method="POST"), timeout=10).read()


async def test_in_process_seeding_serves_every_toolset(sandbox_factory, tmp_path):
    """Seeded through moto's backends, the data reads back through the HTTP API like data
    seeded over HTTP: attributes and FIFO groups, GSIs, metric timestamps, the log store."""
    from opsmcp.server import build_server

    sandbox = sandbox_factory(tmp_path)
    counts = sandbox.seed()
    assert counts == {"queues": 7, "dead_letters": 55, "orders": 240, "metric_points": 9360, "log_lines": 12001}
    server, _ = build_server(sandbox.settings)
    async with Client(server) as client:
        queues = {q["name"]: q for q in (await call(client, "list_queues"))["queues"]}
        assert len(queues) == 7 and "notification-queue" in queues
        payments = await call(client, "analyze_dlq", queue="payment-queue-dlq.fifo")
        assert {g["signature"] for g in payments["groups"]} >= {"GatewayTimeout", "CardDeclined"} or \
            any("GatewayTimeout" in str(g) for g in payments["groups"])
        orders = await call(client, "analyze_dlq", queue="order-queue-dlq")
        assert orders["messages_read"] == 28
        assert any("Database connection timeout" in str(g) for g in orders["groups"])  # explained by the logs
        found = await call(client, "find_orders", status="PENDING", limit=5)
        assert len(found["orders"]) == 5
        metric = await call(client, "query_metrics", namespace="OpsMCP/Services", metric_name="ErrorCount",
                            dimensions={"Service": "payment-service"}, stat="Sum", period_seconds=300,
                            start="-3h", end="now")
        assert metric["points"], metric


def test_banner_lists_every_queue_it_counts(sandbox_factory, tmp_path):
    """Regression: the banner said "7 queues" and named 6 (notification-queue missing)."""
    sandbox = sandbox_factory(tmp_path, toolsets=["queues"])
    sandbox.seed()
    text = banner(sandbox)
    listed = text.split("queues (", 1)[1].split(")", 1)[0].split(", ")
    assert f"{len(listed)} queues" in text and "notification-queue" in listed


async def test_audit_table_on_the_sandbox_records_a_write(sandbox_factory, tmp_path):
    """Regression (issue 8.3): with OPSMCP_AUDIT_TABLE and the sandbox, the audit client was
    built against the placeholder endpoint before the sandbox replaced it: every write failed."""
    import boto3

    from opsmcp.server import build_server

    sandbox = sandbox_factory(tmp_path, audit_table="ops-audit", allow_writes=True, write_approval="prompt-or-confirm")
    server, runtime = build_server(sandbox.settings)  # clients exist before seeding, as in `opsmcp serve`
    runtime.ready.clear()
    sandbox.seed()
    runtime.ready.set()
    async with Client(server) as client:
        moved = await real_redrive(client, queue="order-cancellation-queue-dlq")
    assert moved["moved"] == 8
    ddb = boto3.client("dynamodb", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    phases = {i["phase"]["S"] for i in ddb.scan(TableName="ops-audit")["Items"]}
    assert {"intent", "outcome"} <= phases


def test_orders_table_is_created_over_http_when_motos_internal_signature_changes(fresh_moto):
    """The in-process adapter calls moto's backend ``create_table`` (not a public API); when a
    moto release changes its signature, the table is created through the HTTP API instead,
    and the waiter is then the real one."""
    import boto3

    from opsmcp.sandbox.inprocess import _Dynamo

    class ChangedBackend:
        def create_table(self, *args: object, **kwargs: object) -> None:
            raise TypeError("create_table() got an unexpected keyword argument 'warm_throughput'")

    real = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    dynamodb = _Dynamo(lambda: real, ChangedBackend())
    dynamodb.create_table(TableName="orders-x", KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    waiter = dynamodb.get_waiter("table_exists")
    assert type(waiter).__name__ != "_NoWait"
    waiter.wait(TableName="orders-x")
    assert "orders-x" in real.list_tables()["TableNames"]
