"""The public ops_agent sample data (../shared/fixtures/ops_agent), loaded into a moto server
exactly as its project seeds LocalStack, then read back through opsmcp's tools."""

from __future__ import annotations

import json

import boto3
import pytest
from conftest import call, make_settings
from mcp import Client

from opsmcp.server import build_server
from opsmcp.sandbox.seed import create_orders_table, put_orders

pytestmark = pytest.mark.anyio


def load_fixture_into(endpoint: str, fixtures_dir, settings) -> dict:
    """Create the fixture's queues (DLQ + RedrivePolicy maxReceiveCount 3), send its DLQ
    messages and put its orders; return {dlq name: [bodies]}."""
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    for pair in json.loads((fixtures_dir / "queues.json").read_text()):
        dlq_url = sqs.create_queue(QueueName=pair["dlqName"])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(QueueName=pair["source"], Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
    sent: dict[str, list[dict]] = {}
    for msg in json.loads((fixtures_dir / "dlq_messages.json").read_text()):
        url = sqs.get_queue_url(QueueName=msg["queue"])["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(msg["body"]))
        sent.setdefault(msg["queue"], []).append(msg["body"])
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    create_orders_table(ddb, settings)
    put_orders(ddb, settings.orders_table, json.loads((fixtures_dir / "orders.json").read_text()))
    return sent


async def test_tools_find_the_fixture_dlq_messages_and_orders(fresh_moto, tmp_path, fixtures_dir):
    settings = make_settings(fresh_moto, tmp_path, toolsets=["queues", "orders"])
    sent = load_fixture_into(fresh_moto, fixtures_dir, settings)
    server, _ = build_server(settings)
    async with Client(server) as client:
        queues = {q["name"]: q for q in (await call(client, "list_queues"))["queues"]}
        assert queues["order-queue-dlq"]["visible"] == 2 and queues["order-queue-dlq"]["source_queues"] == ["order-queue"]
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
