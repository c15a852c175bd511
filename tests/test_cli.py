"""The opsmcp command: sandbox seed into an endpoint, doctor."""

from __future__ import annotations

import boto3

from opsmcp.cli import main


def test_sandbox_seed_into_an_endpoint_then_doctor(fresh_moto, tmp_path, monkeypatch, capsys):
    assert main(["sandbox", "seed", "--endpoint-url", fresh_moto]) == 0
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    names = {u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"]}
    assert {"order-queue", "order-queue-dlq", "payment-queue.fifo", "payment-queue-dlq.fifo"} <= names
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    assert ddb.describe_table(TableName="orders")["Table"]["ItemCount"] >= 200 or \
        ddb.scan(TableName="orders", Select="COUNT")["Count"] == 240

    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_moto)
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    rc = main(["doctor", "--toolsets", "queues,orders"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK   sqs: 7 queues visible" in out and "OK   orders table: orders ACTIVE" in out

    monkeypatch.setenv("OPSMCP_ORDERS_TABLE", "ordrs")
    assert main(["doctor", "--toolsets", "orders"]) == 1
    assert "FAIL orders table" in capsys.readouterr().out
