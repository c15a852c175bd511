"""analyze_dlq with other readers, deep queues and long groups, against a real moto server.

Each test makes the condition real: concurrent calls in one server, a second replica or a
foreign boto3 consumer holding messages, messages arriving mid-read, a time budget that
ends the read. Every answer that saw less than the whole queue must say so in fields."""

from __future__ import annotations

import json
from collections import Counter

import anyio
import boto3
import pytest
from helpers import ToolFailed, call, make_settings

pytestmark = pytest.mark.anyio

DLQ = "order-queue-dlq"  # 28 dead letters in the sandbox scenario


@pytest.fixture
def seeded(seeded):
    """conftest's seeded server with a roomy read budget: these tests are about other readers, and
    on a loaded machine a read (here one includes another replica's whole call) can take 4 s."""
    seeded.runtime.queues.reader.budget = 120.0
    return seeded


def _url(sqs, name):
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def _counts(sqs, name):
    a = sqs.get_queue_attributes(QueueUrl=_url(sqs, name), AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def _take(sqs, name: str, n: int, hide: int = 60) -> list[dict]:
    """A foreign consumer: receive ``n`` messages of ``name`` and keep them hidden ``hide`` s."""
    got: list[dict] = []
    while len(got) < n:
        batch = sqs.receive_message(QueueUrl=_url(sqs, name), MaxNumberOfMessages=min(10, n - len(got)),
                                    VisibilityTimeout=hide).get("Messages", [])
        if not batch:
            break
        got += batch
    return got


def _give_back(sqs, name: str, messages: list[dict]) -> None:
    url = _url(sqs, name)
    for m in messages:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)


def _hook_receive(monkeypatch, server_runtime, after_first):
    """Run ``after_first()`` (sync, in a thread) once, right after the server's first DLQ receive;
    returns the list of receive batch sizes the server saw."""
    sqs = server_runtime.toolsets["queues"].sqs
    real = sqs.receive
    sizes: list[int] = []

    async def receive(url, max_messages, visibility_timeout, wait_seconds=0):
        batch = await real(url, max_messages, visibility_timeout, wait_seconds)
        sizes.append(len(batch))
        if len(sizes) == 1:
            await anyio.to_thread.run_sync(after_first)
        return batch

    monkeypatch.setattr(sqs, "receive", receive)
    return sizes


def _fill(sqs, name: str, bodies: list[tuple[dict, str]]) -> str:
    """Create queue ``name`` and send ``(body, ErrorCode)`` messages to it; return its URL."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for i in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": json.dumps(body),
             "MessageAttributes": {"ErrorCode": {"DataType": "String", "StringValue": code}}}
            for n, (body, code) in enumerate(bodies[i:i + 10])])
    return url


async def test_concurrent_calls_in_one_server_share_one_read(seeded, monkeypatch):
    """Old code: three concurrent calls split the 28 dead letters between them (e.g. 10/8/10),
    each saying nothing. Now one read serves all three and the /events poller's sample."""
    sizes = _hook_receive(monkeypatch, seeded.runtime, lambda: None)
    read_dead_letters = seeded.runtime.queues.dead_letters  # what the /events poller reads
    results: list[dict] = []
    polled: list[list[dict]] = []

    async def analyse() -> None:
        results.append(await call(seeded.client, "analyze_dlq", queue=DLQ))

    async def poll() -> None:
        polled.append(await read_dead_letters(DLQ, 50))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(analyse)
        tg.start_soon(poll)
    assert [r["messages_read"] for r in results] == [28, 28, 28]
    assert all(r["complete"] and r["incomplete_because"] == [] and r["approximate_total"] == 28 for r in results)
    assert len(polled[0]) == 28
    assert sum(sizes) == 28 and len(sizes) <= 4  # one read: 10 + 10 + 8 (+ one empty receive)
    shared = [r for r in results if r["age_seconds"] > 0]
    assert len(shared) >= 2 and all(any("shared read" in n for n in r["notes"]) for r in shared)
    assert _counts(seeded.sqs, DLQ) == (28, 0)
    # Counts unchanged: a later call reuses the read; one more dead letter: a new read.
    again = await call(seeded.client, "analyze_dlq", queue=DLQ)
    assert again["age_seconds"] > 0 and len(sizes) <= 4
    seeded.sqs.send_message(QueueUrl=_url(seeded.sqs, DLQ), MessageBody=json.dumps({"orderId": "late"}))
    fresh = await call(seeded.client, "analyze_dlq", queue=DLQ)
    assert fresh["messages_read"] == 29 and fresh["age_seconds"] == 0


async def test_messages_in_flight_elsewhere_are_reported(seeded):
    """Old code: every dead letter received elsewhere gave groups [] and approximate_total 0,
    with no note, while list_queues showed them in flight."""
    taken = _take(seeded.sqs, DLQ, 28)
    assert len(taken) == 28
    out = await call(seeded.client, "analyze_dlq", queue=DLQ)
    assert out["messages_read"] == 0 and out["groups"] == []
    assert any("28 message(s) were in flight" in n for n in out["notes"]) and out["approximate_total"] == 28
    assert out["in_flight"] == 28
    assert out["complete"] is False and out["incomplete_because"] == ["in_flight"] and out["truncated"]
    listed = await call(seeded.client, "list_queues", prefix=DLQ)
    assert listed["queues"][0]["in_flight"] == 28
    # Half given back: half read, still incomplete.
    _give_back(seeded.sqs, DLQ, taken[:14])
    half = await call(seeded.client, "analyze_dlq", queue=DLQ)
    assert half["messages_read"] == 14 and half["in_flight"] == 14 and not half["complete"]


async def test_a_reader_during_the_read_is_reported(seeded, monkeypatch):
    """A foreign consumer takes 10 dead letters while analyze_dlq reads: it reads 18 and says
    another reader hid 10 (old code: 18 read, truncated false, no note)."""
    taken: list[dict] = []
    _hook_receive(monkeypatch, seeded.runtime, lambda: taken.extend(_take(seeded.sqs, DLQ, 10)))
    out = await call(seeded.client, "analyze_dlq", queue=DLQ)
    assert len(taken) == 10 and out["messages_read"] == 18
    assert any("10 message(s) visible when the read began were not received" in n for n in out["notes"])
    assert out["visible"] == 28 and out["in_flight"] == 0
    assert out["in_flight_after"] == 10 and out["approximate_total"] == 28
    assert out["complete"] is False and out["incomplete_because"] == ["other_reader"]


async def test_another_replica_reading_at_the_same_time(seeded, monkeypatch, tmp_path):
    """Replica B reads while replica A holds its first batch: B reads the 18 it can, says 10
    are in flight; A, which B does not hinder (B releases before A goes on), reads all 28."""
    from opsmcp.server import build_server

    _, replica_b = build_server(make_settings(seeded.settings.aws_endpoint_url, tmp_path / "b", toolsets=["queues"],
                                              dlq_read_seconds=120))
    b_results = []

    async def on_b() -> None:
        b_results.append(await replica_b.toolsets["queues"].analyze_dlq(DLQ))

    sqs = seeded.runtime.toolsets["queues"].sqs
    real = sqs.receive

    async def receive(url, max_messages, visibility_timeout, wait_seconds=0):
        batch = await real(url, max_messages, visibility_timeout, wait_seconds)
        if not b_results:
            await on_b()
        return batch

    monkeypatch.setattr(sqs, "receive", receive)
    a = await call(seeded.client, "analyze_dlq", queue=DLQ)
    b = b_results[0]
    assert b.messages_read == 18 and b.in_flight == 10 and not b.complete and b.incomplete_because == ["in_flight"]
    assert a["messages_read"] == 28 and a["complete"]


async def test_order_ids_past_25_page_through_the_cursor(seeded):
    """Old code: a group of 32 showed 25 order ids, truncated false, no way to get the rest."""
    bodies = [({"orderId": f"ord-{n:03d}", "traceId": f"trace-{n:03d}"}, "Timeout") for n in range(32)]
    _fill(seeded.sqs, "wide-dlq", bodies)
    first = await call(seeded.client, "analyze_dlq", queue="wide-dlq")
    g = first["groups"][0]
    assert g["count"] == 32 and g["estimated_count"] == 32 and first["complete"]
    assert len(g["order_ids"]) == 25 and g["order_ids_total"] == 32 and g["trace_ids_total"] == 32
    assert len(g["sample_message_ids"]) == 5 and g["ids_cursor"] and first["truncated"]
    rest = await call(seeded.client, "analyze_dlq", queue="wide-dlq", cursor=g["ids_cursor"])
    page = rest["groups"][0]
    assert page["signature"] == g["signature"] and page["ids_cursor"] is None and rest["next_cursor"] is None
    assert set(g["order_ids"]) | set(page["order_ids"]) == {b["orderId"] for b, _ in bodies}
    assert len(set(g["sample_message_ids"]) | set(page["sample_message_ids"])) == 32
    for bad in ("not-a-cursor", "W10", "x" * 2048):
        with pytest.raises(ToolFailed, match="cursor is not a group's ids_cursor"):
            await call(seeded.client, "analyze_dlq", queue="wide-dlq", cursor=bad)


async def test_total_is_never_below_what_was_read(seeded, monkeypatch):
    """Dead letters arriving mid-read: old code said "read 28 of 10" (approximate_total 10)."""
    url = _fill(seeded.sqs, "growing-dlq", [({"orderId": f"o{n}"}, "Timeout") for n in range(10)])

    def arrive() -> None:
        for i in range(0, 18, 9):
            seeded.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "MessageBody": json.dumps({"orderId": f"late{i + n}"})} for n in range(9)])

    _hook_receive(monkeypatch, seeded.runtime, arrive)
    out = await call(seeded.client, "analyze_dlq", queue="growing-dlq")
    assert out["messages_read"] == 28
    assert out["approximate_total"] >= out["messages_read"] and out["approximate_total"] == 28
    assert out["visible"] == 10
    assert any("changed while it was read: 10 messages before, 28 after" in n for n in out["notes"])


async def test_a_deep_dlq_is_sampled_within_the_bound(fresh_moto, tmp_path):
    """Old code read every message whatever the depth (3,000 dead letters: minutes on moto).
    A time budget (here: spent at once) ends the read after one receive; max_messages ends it
    after 20; totals stay exact, group counts are extrapolated and labelled."""
    from mcp import Client

    from opsmcp.server import build_server

    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    codes = ["Declined" if n % 4 == 3 else "Timeout" for n in range(60)]  # 45 Timeout, 15 Declined
    _fill(sqs, "deep-dlq", [({"orderId": f"o{n}"}, code) for n, code in enumerate(codes)])
    bounds = [(0.001, 1000, 10, 1, "time_budget"), (60, 20, 20, 2, "max_messages")]
    for budget, max_messages, read, calls, bound in bounds:
        server, _ = build_server(make_settings(fresh_moto, tmp_path / bound, toolsets=["queues"],
                                               dlq_read_seconds=budget))
        async with Client(server) as client:
            out = await call(client, "analyze_dlq", queue="deep-dlq", max_messages=max_messages)
        assert out["messages_read"] == read and out["receive_calls"] == calls
        assert out["sampled"] and out["incomplete_because"] == [bound] and not out["complete"]
        assert out["approximate_total"] == 60 and out["visible"] == 60
        assert f"{read} of ~60 visible messages" in out["sample"] and "not a random sample" in out["sample"]
        estimated = Counter({g["signature"]: g["estimated_count"] for g in out["groups"]})
        assert sum(estimated.values()) in range(59, 62)
        assert all(g["estimated_count"] == round(g["count"] * 60 / read) for g in out["groups"])
        assert any(n.startswith("sampled: read") for n in out["notes"])
    assert _counts(sqs, "deep-dlq") == (60, 0)


async def test_list_queues_names_queues_deleted_while_it_listed(seeded, monkeypatch):
    """A queue deleted between ListQueues and its attributes was left out without a word."""
    sqs = seeded.runtime.toolsets["queues"].sqs
    real = sqs.list_urls

    async def list_urls(prefix=None, limit=1000, token=None):
        urls, next_token = await real(prefix, limit, token)
        await anyio.to_thread.run_sync(lambda: seeded.sqs.delete_queue(QueueUrl=_url(seeded.sqs, "notification-queue")))
        return urls, next_token

    monkeypatch.setattr(sqs, "list_urls", list_urls)
    out = await call(seeded.client, "list_queues")
    assert "notification-queue" not in {q["name"] for q in out["queues"]}
    assert any("1 queue(s) were deleted between listing and reading" in n and "notification-queue" in n
               for n in out["notes"])


async def test_a_read_holds_a_bounded_amount_of_bodies(seeded, monkeypatch):
    """Bodies held in memory are bounded (a DLQ of 5,000 messages of 1 MiB would be 5 GB)."""
    from opsmcp.analysis import dlq_read

    _fill(seeded.sqs, "heavy-dlq", [({"orderId": f"o{n}", "pad": "x" * 1000}, "Timeout") for n in range(20)])
    monkeypatch.setattr(dlq_read, "MAX_READ_BYTES", 5000)
    out = await call(seeded.client, "analyze_dlq", queue="heavy-dlq")
    assert out["messages_read"] == 10 and out["incomplete_because"] == ["max_bytes"] and out["sampled"]
    assert out["groups"][0]["estimated_count"] == 20


async def test_list_queues_answers_with_the_counts_it_could_read(fresh_moto, tmp_path):
    """One queue whose counts do not come back within the backend timeout (its request stalls,
    as moto's do on a 50,000-message queue: it scans every message for them) used to fail the
    whole list_queues; now the other queues are listed and that one is named as unread."""
    import time

    from mcp import Client

    from opsmcp.server import build_server

    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    for name in ("slow-deep", "slow-a", "slow-b"):
        sqs.create_queue(QueueName=name)
    server, runtime = build_server(make_settings(fresh_moto, tmp_path, toolsets=["queues"],
                                                 backend_timeout_seconds=1))

    def stall(params, **_):
        if params.get("QueueUrl", "").endswith("/slow-deep"):
            time.sleep(1.5)  # past the 1 s backend timeout

    runtime.clients.client("sqs").meta.events.register("provide-client-params.sqs.GetQueueAttributes", stall)
    async with Client(server) as client:
        out = await call(client, "list_queues", prefix="slow-")
    assert {q["name"] for q in out["queues"]} == {"slow-a", "slow-b"} and out["unread"] == ["slow-deep"]
    assert out["truncated"] and any("could not be read" in n for n in out["notes"])


async def test_a_redrive_dry_run_never_counts_while_a_read_here_hides_the_dlq(seeded, monkeypatch):
    """The /events poller (and analyze_dlq) read a DLQ by receiving its messages, which hides
    them until released. Before: a redrive dry run during such a read counted the hidden DLQ
    ("Move 0 message(s)": nothing to approve; seen once in a full run). Now the dry run waits
    for the read and counts all 28."""
    sqs = seeded.runtime.toolsets["queues"].sqs
    real = sqs.release
    holding, go = anyio.Event(), anyio.Event()
    releases = 0

    async def release(url, handles):  # the read's first release waits for the test
        nonlocal releases
        releases += 1
        if releases == 1:
            holding.set()
            await go.wait()
        return await real(url, handles)

    monkeypatch.setattr(sqs, "release", release)
    lock = seeded.runtime.queues.reader._lock(_url(seeded.sqs, DLQ))
    out: dict = {}

    async def poller_read():
        out["read"] = await seeded.runtime.queues.dead_letters(DLQ)

    async def preview():
        out["preview"] = await call(seeded.client, "redrive_dlq", queue=DLQ)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller_read)
            await holding.wait()  # the read holds the DLQ's messages now
            tg.start_soon(preview)
            while "preview" not in out and lock.statistics().tasks_waiting == 0:
                await anyio.sleep(0.01)  # until the dry run either answered or waits for the read
            go.set()
    assert len(out["read"]) == 28
    assert out["preview"]["matched"] == 28, out["preview"]


async def test_the_poller_read_waits_a_bounded_time_behind_a_dry_run(seeded, monkeypatch):
    """The /events poller reads dead letters through QueueStates.dead_letters: while a redrive
    dry run holds the DLQ it waits at most DEAD_LETTER_WAIT_SECONDS, then fails (the poller
    logs it and goes on) instead of stalling every queue's depth events."""
    from opsmcp.analysis import queue_state
    from opsmcp.errors import OpsError

    monkeypatch.setattr(queue_state, "DEAD_LETTER_WAIT_SECONDS", 0.3)
    states = seeded.runtime.queues
    failed: list[OpsError] = []

    async def poller_read():
        try:
            await states.dead_letters(DLQ)
        except OpsError as exc:
            failed.append(exc)

    with anyio.fail_after(60):
        async with states.reader.exclusive(_url(seeded.sqs, DLQ)), anyio.create_task_group() as tg:
            tg.start_soon(poller_read)  # another task, as the poller is
        assert len(failed) == 1 and "held it for over 0.3 s; nothing was read" in str(failed[0])
        assert len(await states.dead_letters(DLQ)) == 28  # free again: a whole read
    assert _counts(seeded.sqs, DLQ) == (28, 0)
