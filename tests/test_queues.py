"""Queue tools through the in-memory MCP client against a real moto server."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest
from helpers import ToolFailed, call, drain_queue, make_settings, real_redrive

pytestmark = pytest.mark.anyio


def _url(sqs, name):
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def _counts(sqs, name):
    a = sqs.get_queue_attributes(QueueUrl=_url(sqs, name), AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def _drain(sqs, name):
    """Receive and delete everything in a queue; return [(body, attrs, group id)]."""
    out = []
    for m in drain_queue(sqs, _url(sqs, name)):
        attrs = {k: v.get("StringValue") for k, v in (m.get("MessageAttributes") or {}).items()}
        out.append((m["Body"], json.dumps(attrs, sort_keys=True), m["Attributes"].get("MessageGroupId")))
    return out


async def test_list_queues_shows_counts_and_dlq_wiring(seeded):
    out = await call(seeded.client, "list_queues")
    by = {q["name"]: q for q in out["queues"]}
    assert by["order-queue"]["dlq"] == "order-queue-dlq" and by["order-queue"]["max_receive_count"] == 3
    assert by["order-queue"]["visible"] == 35
    assert by["order-queue-dlq"]["is_dlq"] and by["order-queue-dlq"]["source_queues"] == ["order-queue"]
    assert by["order-queue-dlq"]["visible"] == 28
    assert by["payment-queue-dlq.fifo"]["fifo"] and by["payment-queue-dlq.fifo"]["visible"] == 19
    assert by["notification-queue"]["dlq"] is None and not by["notification-queue"]["is_dlq"]
    only = await call(seeded.client, "list_queues", prefix="payment")
    assert {q["name"] for q in only["queues"]} == {"payment-queue.fifo", "payment-queue-dlq.fifo"}


async def test_peek_gives_messages_back_and_warns_near_dlq(seeded):
    first = await call(seeded.client, "peek_messages", queue="notification-queue", max_messages=3)
    assert len(first["messages"]) == 3 and first["messages"][0]["body_format"] == "json"
    assert _counts(seeded.sqs, "notification-queue") == (12, 0)  # visible again at once
    # order-queue has maxReceiveCount 3: after enough peeks the result must warn.
    warned = None
    for _ in range(6):
        res = await call(seeded.client, "peek_messages", queue="order-queue", max_messages=10)
        if any(m["near_dlq"] for m in res["messages"]):
            warned = res
            break
    assert warned is not None
    assert any("WARNING" in n and "order-queue-dlq" in n for n in warned["notes"])
    assert all(m["receive_count"] >= 3 for m in warned["messages"] if m["near_dlq"])


async def test_peek_labels_text_and_huge_bodies(seeded):
    url = _url(seeded.sqs, "notification-queue")
    seeded.sqs.purge_queue(QueueUrl=url)
    seeded.sqs.send_message(QueueUrl=url, MessageBody="plain text, not json")
    seeded.sqs.send_message(QueueUrl=url, MessageBody="x" * (256 * 1024 - 10))
    res = await call(seeded.client, "peek_messages", queue=url, max_messages=10)
    by_size = sorted(res["messages"], key=lambda m: m["body_bytes"])
    assert by_size[0]["body_format"] == "text" and by_size[0]["body"] == "plain text, not json"
    assert by_size[1]["body_bytes"] == 256 * 1024 - 10 and by_size[1]["body_truncated"]
    assert len(by_size[1]["body"]) <= 4096


async def test_analyze_dlq_groups_and_hides_nothing(seeded):
    before = _counts(seeded.sqs, "payment-queue-dlq.fifo")
    out = await call(seeded.client, "analyze_dlq", queue="payment-queue-dlq.fifo")
    assert out["messages_read"] == 19 and out["source_queues"] == ["payment-queue.fifo"]
    groups = {g["signature"]: g for g in out["groups"]}
    timeout = next(g for s, g in groups.items() if s.startswith("GatewayTimeout"))
    assert timeout["count"] == 14 and timeout["basis"] == "error_attributes"
    assert next(g for s, g in groups.items() if s.startswith("CardDeclined"))["count"] == 5
    expected_orders = {d.order_id for d in seeded.scenario.dead_letters if d.cause == "gateway-timeout"}
    assert set(timeout["order_ids"]) == expected_orders
    assert _counts(seeded.sqs, "payment-queue-dlq.fifo") == before  # nothing moved, nothing hidden

    orders_dlq = await call(seeded.client, "analyze_dlq", queue="order-queue-dlq")
    sigs = Counter({g["signature"]: g["count"] for g in orders_dlq["groups"]})
    assert sigs["unparseable body (not JSON)"] == 1
    assert sum(sigs.values()) == 28
    assert _counts(seeded.sqs, "order-queue-dlq") == (28, 0)


async def test_analyze_refuses_a_source_queue(seeded):
    with pytest.raises(ToolFailed, match=r"redrive policy.*order-queue-dlq"):
        await call(seeded.client, "analyze_dlq", queue="order-queue")
    assert _counts(seeded.sqs, "order-queue") == (35, 0)


async def test_unknown_queue_lists_closest_names(seeded):
    with pytest.raises(ToolFailed, match="order-queue-dlq"):
        await call(seeded.client, "analyze_dlq", queue="order-dlq")



async def test_out_of_range_limits_clamp_with_a_note(seeded):
    """Project rule: an out-of-range limit is clamped and labelled, never raw validator text."""
    peek = await call(seeded.client, "peek_messages", queue="notification-queue", max_messages=50)
    assert len(peek["messages"]) == 10
    assert any("max_messages=50 is outside 1-10; clamped to 10" in n for n in peek["notes"])
    listed = await call(seeded.client, "list_queues", limit=0)
    assert listed["count"] == 1 and any("limit=0" in n for n in listed["notes"])
    dry = await call(seeded.client, "redrive_dlq", queue="order-cancellation-queue-dlq", max_messages=99_999)
    assert dry["matched"] == 8 and any("clamped to 10000" in n for n in dry["notes"])
    analysis = await call(seeded.client, "analyze_dlq", queue="order-cancellation-queue-dlq", max_messages=-3)
    assert analysis["messages_read"] == 1 and any("clamped to 1" in n for n in analysis["notes"])


async def test_free_text_arguments_are_bounded(seeded):
    """AWS caps a queue-name prefix at 80 characters; a 1 MB argument is refused by the schema."""
    for tool, args in [("list_queues", {"prefix": "p" * 81}), ("list_queues", {"cursor": "c" * 5000}),
                       ("redrive_dlq", {"queue": "order-queue-dlq", "signature": "s" * 1_000_000}),
                       ("redrive_dlq", {"queue": "order-queue-dlq", "target": "t" * 5000}),
                       ("peek_messages", {"queue": "q" * 5000})]:
        with pytest.raises(ToolFailed, match=r"at most|is too long"):
            await call(seeded.client, tool, **args)


async def test_bad_list_queues_cursor_says_what_to_do(seeded):
    with pytest.raises(ToolFailed, match=r"cursor is not one list_queues returned.*without cursor"):
        await call(seeded.client, "list_queues", cursor="not-a-token")


async def test_redrive_dry_run_moves_nothing(seeded):
    res = await call(seeded.client, "redrive_dlq", queue="order-cancellation-queue-dlq")
    assert res["dry_run"] and res["matched"] == 8 and res["moved"] == 0
    assert res["target"] == "order-cancellation-queue"
    assert _counts(seeded.sqs, "order-cancellation-queue-dlq") == (8, 0)
    assert _counts(seeded.sqs, "order-cancellation-queue") == (0, 0)


async def test_redrive_moves_every_message_exactly_once(seeded):
    dlq = "payment-queue-dlq.fifo"
    res = await real_redrive(seeded.client, queue=dlq)
    assert res["moved"] == 19 and not res["failed"] and res["remaining"] == 0
    moved = _drain(seeded.sqs, "payment-queue.fifo")
    expected = [(d.body, json.dumps({k: v["StringValue"] for k, v in d.attributes.items()}, sort_keys=True), d.group_id)
                for d in seeded.scenario.dead_letters if d.queue == dlq]
    assert Counter(moved) == Counter(expected)  # bodies, attributes and FIFO group ids, each once
    assert _counts(seeded.sqs, dlq) == (0, 0)


async def test_redrive_by_signature_moves_only_that_group(seeded):
    analysis = await call(seeded.client, "analyze_dlq", queue="payment-queue-dlq.fifo")
    declined = next(g for g in analysis["groups"] if g["signature"].startswith("CardDeclined"))
    res = await real_redrive(seeded.client, queue="payment-queue-dlq.fifo", signature=declined["signature"])
    assert res["moved"] == 5 and res["by_signature"] == {declined["signature"]: 5}
    assert _counts(seeded.sqs, "payment-queue-dlq.fifo") == (14, 0)
    assert _counts(seeded.sqs, "payment-queue.fifo")[0] == 5


async def test_redrive_partial_send_failure_deletes_only_what_was_sent(seeded):
    """Entries the target rejects stay in the DLQ; the rest move. The fault is real: a botocore
    hook gives chosen entries an invalid DelaySeconds, which the SQS server rejects per entry."""
    client = seeded.runtime.clients.client("sqs", retries=False)  # sends go through the one-attempt client
    doomed = {d.body for d in seeded.scenario.dead_letters if d.cause == "already-shipped"}
    doomed = set(sorted(doomed)[:3])

    def poison(params, **_):
        for entry in params.get("Entries", []):
            if entry.get("MessageBody") in doomed:
                entry["DelaySeconds"] = 9999

    client.meta.events.register("provide-client-params.sqs.SendMessageBatch", poison)
    try:
        res = await real_redrive(seeded.client, queue="order-cancellation-queue-dlq")
    finally:
        client.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", poison)
    assert res["moved"] == 5 and len(res["failed"]) == 3 and res["remaining"] == 3
    left = {b for b, _, _ in _drain(seeded.sqs, "order-cancellation-queue-dlq")}
    arrived = {b for b, _, _ in _drain(seeded.sqs, "order-cancellation-queue")}
    assert left == doomed and len(arrived) == 5 and not (left & arrived)


async def test_redrive_crash_between_send_and_delete_loses_nothing(seeded):
    """If the process dies after sending and before deleting, messages exist twice, never zero times."""
    client = seeded.runtime.clients.client("sqs")

    def crash(**_):
        raise ConnectionError("simulated crash before delete")

    client.meta.events.register("before-call.sqs.DeleteMessageBatch", crash)
    try:
        res = await real_redrive(seeded.client, queue="order-cancellation-queue-dlq")
    finally:
        client.meta.events.unregister("before-call.sqs.DeleteMessageBatch", crash)
    assert res["moved"] == 0 and len(res["duplicates_possible"]) == 8 and any("stopped" in n for n in res["notes"])
    originals = {d.body for d in seeded.scenario.dead_letters if d.queue == "order-cancellation-queue-dlq"}
    still = {b for b, _, _ in _drain(seeded.sqs, "order-cancellation-queue-dlq")}
    sent = {b for b, _, _ in _drain(seeded.sqs, "order-cancellation-queue")}
    assert still == originals and sent == originals  # twice, never zero times; DLQ released for a retry


async def test_confirm_needs_a_preview_and_the_move_is_capped_at_it(seeded):
    """confirm=true without the preview's token only returns the preview (and a token); with
    it, the real move never does more than the preview showed, even if the DLQ grew."""
    dlq = "order-cancellation-queue-dlq"
    with pytest.raises(ToolFailed, match=r"(?s)Move 8 message.*confirm=true") as needs:
        await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False, confirm=True)
    token = re.search(r'approval_token="([^"]+)"', str(needs.value)).group(1)  # type: ignore[union-attr]
    assert _counts(seeded.sqs, dlq) == (8, 0)
    for n in range(3):  # three more dead letters arrive after the user saw "Move 8"
        seeded.sqs.send_message(QueueUrl=_url(seeded.sqs, dlq), MessageBody=json.dumps({"late": n}))
    res = await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False, confirm=True, approval_token=token)
    assert res["moved"] == 8 and res["status"] == "complete" and res["remaining"] == 3
    # the approval is used up: the next real call needs a fresh preview
    with pytest.raises(ToolFailed, match=r"(?s)Move 3 message.*confirm=true"):
        await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False, confirm=True)


async def test_redrive_stops_and_reports_what_moved_when_the_dlq_fails_midway(seeded):
    """An error in the middle of a real redrive returns what already moved (status stopped)."""
    client = seeded.runtime.clients.client("sqs")
    dlq = "order-queue-dlq"
    token = (await call(seeded.client, "redrive_dlq", queue=dlq))["approval"]["token"]  # the preview
    receives = {"n": 0}

    def flaky(**_):
        receives["n"] += 1
        if receives["n"] == 3:
            raise ConnectionError("DLQ endpoint went away")

    client.meta.events.register("before-call.sqs.ReceiveMessage", flaky)
    try:
        res = await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False, confirm=True, approval_token=token)
    finally:
        client.meta.events.unregister("before-call.sqs.ReceiveMessage", flaky)
    assert res["status"] == "stopped" and res["moved"] == 20 and any("stopped early" in n for n in res["notes"])
    assert sum(_counts(seeded.sqs, dlq)) == 8 and _counts(seeded.sqs, "order-queue")[0] == 35 + 20


async def test_redrive_needs_a_target_for_a_non_dlq(seeded):
    with pytest.raises(ToolFailed, match="not the DLQ of any queue"):
        await real_redrive(seeded.client, queue="notification-queue")


async def test_backend_down_is_a_prompt_tool_error(tmp_path):
    from mcp import Client

    from opsmcp.server import build_server

    settings = make_settings("http://127.0.0.1:9", tmp_path, backend_timeout_seconds=1)
    server, _ = build_server(settings)
    async with Client(server) as client:
        start = time.monotonic()
        with pytest.raises(ToolFailed, match=r"127\.0\.0\.1:9"):
            await call(client, "list_queues")
        assert time.monotonic() - start < 10


async def test_analyze_dlq_correlates_with_the_sandbox_logs(seeded):
    """Messages without error attributes are explained by their trace's ERROR lines."""
    from opsmcp.sandbox.logseed import seed_logs

    seed_logs(seeded.settings.log_store_path, seeded.scenario)
    out = await call(seeded.client, "analyze_dlq", queue="order-queue-dlq")
    by_basis = Counter((g["basis"], g["service"]) for g in out["groups"] for _ in range(g["count"]))
    assert by_basis == {("logs", "order-processor"): 27, ("unparseable", None): 1}
    groups = {g["signature"]: g for g in out["groups"]}
    db = next(g for s, g in groups.items() if "Database connection timeout" in s)
    expected = {d.order_id for d in seeded.scenario.dead_letters if d.cause == "db-timeout"}
    assert db["count"] == 18 and set(db["order_ids"]) == expected
    assert next(g for s, g in groups.items() if "Invalid product configuration" in s)["count"] == 9
    # the redrive filter uses the same signatures
    res = await call(seeded.client, "redrive_dlq", queue="order-queue-dlq", signature=db["signature"])
    assert res["matched"] == 18 and res["dry_run"]


async def test_redrive_splits_batches_over_the_256_kb_payload_limit(seeded):
    """Ten 200 KB messages exceed a SendMessageBatch's total payload limit (1 MiB in current
    SQS and moto); the server rejects such a batch whole, so without splitting they could
    never be redriven."""
    dlq = "order-cancellation-queue-dlq"
    url = _url(seeded.sqs, dlq)
    seeded.sqs.purge_queue(QueueUrl=url)
    bodies = {json.dumps({"n": n, "pad": "x" * 200_000}) for n in range(10)}
    for body in bodies:
        seeded.sqs.send_message(QueueUrl=url, MessageBody=body)
    res = await real_redrive(seeded.client, queue=dlq)
    assert res["moved"] == 10 and res["status"] == "complete"
    assert {b for b, _, _ in _drain(seeded.sqs, "order-cancellation-queue")} == bodies
