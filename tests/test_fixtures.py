"""The public ops_agent sample data (tests/fixtures/ops_agent), loaded into a moto server
exactly as its project seeds LocalStack, then read back through opsmcp's tools."""

from __future__ import annotations

import json

import pytest
from helpers import call, load_fixture_into, make_settings
from mcp import Client

from opsmcp.server import build_server
from datetime import UTC

pytestmark = pytest.mark.anyio


async def test_tools_find_the_fixture_dlq_messages_and_orders(fresh_moto, tmp_path, fixtures_dir):
    settings = make_settings(fresh_moto, tmp_path, toolsets=["queues", "orders"])
    sent = load_fixture_into(fresh_moto, fixtures_dir, settings)
    server, _ = build_server(settings)
    async with Client(server) as client:
        queues = {q["name"]: q for q in (await call(client, "list_queues"))["queues"]}
        assert queues["order-queue-dlq"]["visible"] == 2
        assert queues["order-queue-dlq"]["source_queues"] == ["order-queue"]
        assert queues["order-cancellation-queue-dlq"]["visible"] == 1
        assert queues["order-queue"]["dlq"] == "order-queue-dlq" and queues["order-queue"]["max_receive_count"] == 3

        total = 0
        for dlq, bodies in sent.items():
            out = await call(client, "analyze_dlq", queue=dlq)
            total += out["messages_read"]
            orders = {o for g in out["groups"] for o in g["order_ids"]}
            traces = {t for g in out["groups"] for t in g["trace_ids"]}
            assert orders == {b["data"]["orderId"] for b in bodies}
            assert traces == {b["traceId"] for b in bodies}
        assert total == 3

        fixture_orders = json.loads((fixtures_dir / "orders.json").read_text())
        assert len(fixture_orders) == 5
        for order in fixture_orders:
            got = await call(client, "get_order", order_id=order["orderId"])
            assert got["order"] == order


async def test_analyze_dlq_names_the_three_fixture_failure_stories(fresh_moto, tmp_path, fixtures_dir):
    """The fixture's logs loaded through `opsmcp logs load` explain its DLQ messages: each
    group names the service and the error that sent the message to the DLQ."""
    from datetime import datetime, timedelta

    from opsmcp.cli import main

    now = datetime.now(UTC)
    lines = []
    for doc in json.loads((fixtures_dir / "logs.json").read_text()):
        doc["@timestamp"] = (now - timedelta(seconds=doc.pop("seconds_before_load"))).isoformat()
        lines.append(json.dumps(doc))
    jsonl = tmp_path / "logs.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    store = tmp_path / "logs.db"
    assert main(["logs", "load", str(jsonl), "--store", str(store), "--quiet"]) == 0

    settings = make_settings(fresh_moto, tmp_path, toolsets=["queues", "orders", "logs"], log_store=store)
    load_fixture_into(fresh_moto, fixtures_dir, settings)
    server, _ = build_server(settings)
    async with Client(server) as client:
        orders_dlq = await call(client, "analyze_dlq", queue="order-queue-dlq")
        cancel_dlq = await call(client, "analyze_dlq", queue="order-cancellation-queue-dlq")
    stories = {(g["service"], g["error_message"], g["basis"], tuple(g["trace_ids"]))
               for g in orders_dlq["groups"] + cancel_dlq["groups"]}
    assert stories == {
        ("order-processor", "Failed again - Database connection timeout", "logs",
         ("ce79cdee-0e35-4d47-84b0-9d3247266382",)),
        ("payment-service", "Payment failed again - Payment gateway unavailable", "logs",
         ("fe89cdee-1e35-4d47-84b0-9d3247266390",)),
        ("order-cancellation", "Failed to cancel order: Order already shipped", "logs",
         ("ae59cdee-2e45-5d57-95b0-9d3247266456",)),
    }
