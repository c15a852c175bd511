"""Two replicas behind one endpoint: two real HTTP apps (uvicorn, loopback) against one moto
server, sharing OPSMCP_APPROVAL_SECRET and a DynamoDB audit table. One client alternates its
requests between them, including a redrive preview on replica A and the approved real
redrive on replica B; nothing depends on per-process state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from helpers import bearer, call, make_settings, serve_app, serving, visible
from mcp import Client
from pydantic import SecretStr

DLQ = "order-cancellation-queue-dlq"
SOURCE = "order-cancellation-queue"
BEARER = bearer("replica-test-token")


def test_preview_on_one_replica_approved_redrive_on_the_other(fresh_moto, tmp_path) -> None:
    import anyio

    from opsmcp.sandbox.seed import create_audit_table
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    base = make_settings(fresh_moto, tmp_path / "seed", allow_writes=True)
    seed_aws(base, build_scenario(), metrics=False)
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    create_audit_table(ddb, "opsmcp-audit")
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    shared = dict(allow_writes=True, approval_secret=SecretStr("r" * 40), audit_table="opsmcp-audit",
                  http_token="replica-test-token", toolsets=["queues", "orders"], write_approval="prompt-or-confirm")
    a_settings = make_settings(fresh_moto, tmp_path / "a", **shared)
    b_settings = make_settings(fresh_moto, tmp_path / "b", **shared)
    before = visible(sqs, DLQ)
    assert before == 8

    async def session(url_a: str, url_b: str) -> None:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers=BEARER, timeout=30) as http_a, \
                httpx2.AsyncClient(headers=BEARER, timeout=30) as http_b, \
                Client(streamable_http_client(f"{url_a}/mcp", http_client=http_a)) as on_a, \
                Client(streamable_http_client(f"{url_b}/mcp", http_client=http_b)) as on_b:
            # Alternate reads between the replicas.
            listed = await call(on_a, "list_queues")
            assert DLQ in {q["name"] for q in listed["queues"]}
            analysis = await call(on_b, "analyze_dlq", queue=DLQ)
            assert analysis["messages_read"] == before
            # Preview on A; the approved real move on B, held to what A's preview showed.
            preview = await call(on_a, "redrive_dlq", queue=DLQ, max_messages=5)
            assert preview["matched"] == 5
            token = preview["approval"]["token"]
            real = dict(queue=DLQ, max_messages=5, dry_run=False, confirm=True, approval_token=token)
            moved = await call(on_b, "redrive_dlq", **real)
            assert moved["moved"] == 5 and moved["status"] == "complete"
            # The same token is spent for both replicas.
            again = await on_a.call_tool("redrive_dlq", real)
            assert again.is_error and "already used" in again.content[0].text  # type: ignore[union-attr]
            order = await call(on_b, "find_orders", status="CANCELLED", limit=1)
            assert "orders" in order

    with serve_app(a_settings) as (url_a, _), serve_app(b_settings) as (url_b, _):
        anyio.run(session, url_a, url_b)
    assert visible(sqs, DLQ) == before - 5
    assert visible(sqs, SOURCE) >= 5
    # The replicas share the audit table: the move's intent and outcome, and the token's claim.
    phases = {i["phase"]["S"] for i in ddb.scan(TableName="opsmcp-audit")["Items"]}
    assert {"intent", "outcome", "claimed"} <= phases


@contextmanager
def one_request_at_a_time(fresh_moto: str) -> Iterator[str]:
    """A second endpoint on the session's moto state (moto keeps one state per process) that
    serves one request at a time; yields its URL.

    moto evaluates a ConditionExpression and then writes without a lock, so two concurrent
    conditional writes to one item can both succeed on moto's threaded server, which real
    DynamoDB never allows (a conditional write is atomic per item). Serving requests one by
    one gives the per-item atomicity DynamoDB guarantees; the replicas still race each other
    for real (two processes' worth of apps, two approvers, two HTTP calls at once)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    with serving(make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False)) as url:
        yield url


def test_two_approvers_racing_on_two_replicas_produce_one_write(fresh_moto, tmp_path) -> None:
    """OPSMCP_WRITE_APPROVAL=human on two replicas sharing the DynamoDB audit table: a request
    made on A is pending on B too; two approvers click at the same moment, one on each
    replica: one write runs (the other approver gets 409), held to the preview's bound."""
    with one_request_at_a_time(fresh_moto) as endpoint:
        _race(endpoint, tmp_path)


def _race(fresh_moto: str, tmp_path) -> None:

    import anyio
    import httpx
    from helpers import mcp_call, team_tokens

    from opsmcp.sandbox.seed import create_audit_table
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    tokens = team_tokens(tmp_path)
    from opsmcp.transport.auth import add_token

    tokens["deputy"] = add_token(tmp_path / "tokens.jsonl", "deputy", ["ops:read", "ops:approve"])
    base = make_settings(fresh_moto, tmp_path / "seed")
    seed_aws(base, build_scenario(), metrics=False)
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    create_audit_table(ddb, "opsmcp-audit")
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    shared = dict(allow_writes=True, approval_secret=SecretStr("r" * 40), audit_table="opsmcp-audit",
                  tokens_file=tmp_path / "tokens.jsonl", toolsets=["queues"], write_approval="human")
    with serve_app(make_settings(fresh_moto, tmp_path / "a", **shared)) as (url_a, _), \
            serve_app(make_settings(fresh_moto, tmp_path / "b", **shared)) as (url_b, _):
        pending = anyio.run(lambda: mcp_call(url_a, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                              max_messages=6))
        request_id = pending["approval_id"]
        _late = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
        for i in range(3):  # more dead letters after the preview: not approved, never moved
            sqs.send_message(QueueUrl=_late, MessageBody=f'{{"late": {i}}}')
        on_b = httpx.get(f"{url_b}/api/approvals", headers={"Authorization": f"Bearer {tokens['viewer']}"}).json()
        assert [r["id"] for r in on_b["approvals"]] == [request_id]
        answers: dict[str, httpx.Response] = {}
        barrier = threading.Barrier(2)

        def click(name: str, url: str) -> None:
            with httpx.Client(timeout=120) as http:
                barrier.wait()
                answers[name] = http.post(f"{url}/api/approvals/{request_id}/approve",
                                          headers={"Authorization": f"Bearer {tokens[name]}"})

        threads = [threading.Thread(target=click, args=("lead", url_a)),
                   threading.Thread(target=click, args=("deputy", url_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {k: (v.status_code, v.text[:300]) for k, v in answers.items()}
        winner = next(r.json() for r in answers.values() if r.status_code == 200)
        assert winner["status"] == "done" and winner["result"]["moved"] == 6
        final = httpx.get(f"{url_b}/api/approvals/{request_id}",
                          headers={"Authorization": f"Bearer {tokens['viewer']}"}).json()
        assert final["status"] == "done" and final["approver"] == winner["approver"]
    assert visible(sqs, DLQ) == 5 and visible(sqs, SOURCE) == 6
    items = ddb.scan(TableName="opsmcp-audit")["Items"]
    phases = sorted(i["phase"]["S"] for i in items if i["call_id"]["S"] == request_id)
    assert phases == ["approved", "intent", "outcome", "progress", "request", "requested"]
