"""Two replicas behind one endpoint: two real HTTP apps (uvicorn, loopback) against one moto
server, sharing OPSMCP_APPROVAL_SECRET and a DynamoDB audit table. One client alternates its
requests between them, including a redrive preview on replica A and the approved real
redrive on replica B; nothing depends on per-process state."""

from __future__ import annotations

import re

import boto3
from helpers import make_settings
from mcp import Client
from pydantic import SecretStr
from helpers import serve_app

DLQ = "order-cancellation-queue-dlq"
SOURCE = "order-cancellation-queue"
TOKEN_IN_NOTES = re.compile(r"approval_token=(\S+)")
BEARER = {"Authorization": "Bearer replica-test-token"}


def _visible(sqs, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


async def _call(client: Client, tool: str, **arguments):
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, text
    return result.structured_content


def test_preview_on_one_replica_approved_redrive_on_the_other(fresh_moto, tmp_path) -> None:
    import anyio

    from opsmcp.calls.audit import create_audit_table
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    base = make_settings(fresh_moto, tmp_path / "seed", allow_writes=True)
    seed_aws(base, build_scenario(), metrics=False)
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    create_audit_table(ddb, "opsmcp-audit")
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    shared = dict(allow_writes=True, approval_secret=SecretStr("r" * 40), audit_table="opsmcp-audit",
                  http_token="replica-test-token", toolsets=["queues", "orders"])
    a_settings = make_settings(fresh_moto, tmp_path / "a", **shared)
    b_settings = make_settings(fresh_moto, tmp_path / "b", **shared)
    before = _visible(sqs, DLQ)
    assert before == 8

    async def session(url_a: str, url_b: str) -> None:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers=BEARER, timeout=30) as http_a, \
                httpx2.AsyncClient(headers=BEARER, timeout=30) as http_b, \
                Client(streamable_http_client(f"{url_a}/mcp", http_client=http_a)) as on_a, \
                Client(streamable_http_client(f"{url_b}/mcp", http_client=http_b)) as on_b:
            # Alternate reads between the replicas.
            listed = await _call(on_a, "list_queues")
            assert DLQ in {q["name"] for q in listed["queues"]}
            analysis = await _call(on_b, "analyze_dlq", queue=DLQ)
            assert analysis["messages_read"] == before
            # Preview on A; the approved real move on B, held to what A's preview showed.
            preview = await _call(on_a, "redrive_dlq", queue=DLQ, max_messages=5)
            assert preview["matched"] == 5
            token = TOKEN_IN_NOTES.search(" ".join(preview["notes"])).group(1)  # type: ignore[union-attr]
            real = dict(queue=DLQ, max_messages=5, dry_run=False, confirm=True, approval_token=token)
            moved = await _call(on_b, "redrive_dlq", **real)
            assert moved["moved"] == 5 and moved["status"] == "complete"
            # The same token is spent for both replicas.
            again = await on_a.call_tool("redrive_dlq", real)
            assert again.is_error and "already used" in again.content[0].text  # type: ignore[union-attr]
            order = await _call(on_b, "find_orders", status="CANCELLED", limit=1)
            assert "orders" in order

    with serve_app(a_settings) as (url_a, _), serve_app(b_settings) as (url_b, _):
        anyio.run(session, url_a, url_b)
    assert _visible(sqs, DLQ) == before - 5
    assert _visible(sqs, SOURCE) >= 5
    # The replicas share the audit table: the move's intent and outcome, and the token's claim.
    phases = {i["phase"]["S"] for i in ddb.scan(TableName="opsmcp-audit")["Items"]}
    assert {"intent", "outcome", "claimed"} <= phases
