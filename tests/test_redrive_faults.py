"""The redrive mover (the only code that deletes data) under injected faults, a stalled
backend, odd routes, and a whole FIFO DLQ in one approved call.

Faults are real: botocore event hooks on the server's own clients (the suite's style) and
a loopback proxy in front of the moto server that forwards a request and then stalls its
answer, as a backend does that applies a call and times out.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import boto3
import pytest
from helpers import call, drain_queue, fill, make_pair, make_settings, ToolFailed

from opsmcp.backends.aws import AwsClients
from opsmcp.backends.sqs import SqsBackend
from opsmcp.errors import BackendUnavailable
from opsmcp.toolsets.queues import QueueTools
from helpers import StallingProxy

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------- helpers -------------


def _sqs(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def visible(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def tools(endpoint: str, tmp_path: Any, **overrides: Any) -> QueueTools:
    settings = make_settings(endpoint, tmp_path, **overrides)
    return QueueTools(settings, SqsBackend(AwsClients(settings)))


@contextmanager
def stalling_proxy(upstream: str, match: Any, stall: float) -> Iterator[StallingProxy]:
    proxy = StallingProxy(upstream, match, stall)
    try:
        yield proxy
    finally:
        proxy.close()


# ---------------------------------------------------------------- point 8 -------------


async def test_a_timed_out_send_is_sent_once_and_every_copy_is_reported(fresh_moto, tmp_path):
    """The backend applies the first SendMessageBatch and then times out. botocore used to retry
    it (3 attempts = 3 copies while 10 were reported); now the send is made once and the
    copies that can exist are exactly the reported duplicates_possible; nothing is deleted."""
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "stall")
    fill(sqs, dlq, 25)
    qt = tools(fresh_moto, tmp_path, backend_timeout_seconds=20)
    attempts = {"n": 0}

    def apply_then_time_out(request: Any, **_: Any) -> None:
        from botocore.exceptions import ReadTimeoutError

        attempts["n"] += 1
        if attempts["n"] > 3:  # only the first send (and any retry of it) stalls
            return
        req = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers), method="POST")
        urllib.request.urlopen(req, timeout=10).read()  # the backend applies it...
        raise ReadTimeoutError(endpoint_url=request.url)  # ...and the answer never comes

    for client in (qt.sqs.clients.client("sqs"), qt.sqs.clients.client("sqs", retries=False)):
        client.meta.events.register("before-send.sqs.SendMessageBatch", apply_then_time_out)
    res = await qt.redrive("stall-dlq", None, 1000, None, dry_run=False)
    assert attempts["n"] == 1  # never retried
    assert res.status == "stopped" and res.moved == 0 and len(res.duplicates_possible) == 10
    arrived = drain_queue(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"])
    in_dlq = {m["MessageId"]: m["Body"] for m in drain_queue(sqs, dlq)}
    assert len(in_dlq) == 25  # nothing deleted
    assert Counter(m["Body"] for m in arrived) == Counter(in_dlq[i] for i in res.duplicates_possible)


async def test_a_stalled_backend_fails_a_call_within_the_configured_timeout(fresh_moto, tmp_path):
    """OPSMCP_BACKEND_TIMEOUT_SECONDS bounds a call with its retries (it used to take 3x)."""
    with stalling_proxy(fresh_moto, lambda target: True, stall=10) as proxy:
        qt = tools(proxy.url, tmp_path, backend_timeout_seconds=1)
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"did not answer within 1 s"):
            await qt.list_queues()
        assert time.monotonic() - start < 2.5  # 3 attempts of 1 s each before


async def test_a_send_stalled_behind_a_proxy_is_reported_and_not_deleted(fresh_moto, tmp_path):
    """Through a real stalled connection: the DLQ keeps all, the target holds exactly the reported batch."""
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "proxied")
    fill(sqs, dlq, 25)
    with stalling_proxy(fresh_moto, lambda target: target.endswith("SendMessageBatch"), stall=10) as proxy:
        qt = tools(proxy.url, tmp_path, backend_timeout_seconds=1)
        start = time.monotonic()
        res = await qt.redrive("proxied-dlq", None, 1000, None, dry_run=False)
        took = time.monotonic() - start
    assert res.status == "stopped" and res.moved == 0 and len(res.duplicates_possible) == 10
    assert took < 8  # the stalled send was given up after its 1 s timeout, not waited out (10 s)
    assert proxy.forwarded["SendMessageBatch"] == 1
    arrived = drain_queue(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"])
    assert len(arrived) == 10 and visible(sqs, dlq) == (25, 0)


# ---------------------------------------------------------------- untested branches ---


async def test_send_raising_keeps_everything_and_reports_possible_duplicates(fresh_moto, tmp_path):
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "raise")
    fill(sqs, dlq, 12)
    qt = tools(fresh_moto, tmp_path)

    def boom(**_: Any) -> None:
        raise ConnectionError("connection reset while sending")

    qt.sqs.clients.client("sqs", retries=False).meta.events.register("before-call.sqs.SendMessageBatch", boom)
    res = await qt.redrive("raise-dlq", None, 1000, None, dry_run=False)
    assert res.status == "stopped" and res.moved == 0 and len(res.duplicates_possible) == 10
    assert any("may also have reached the target" in n for n in res.notes)
    assert visible(sqs, dlq) == (12, 0) and visible(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"]) == (0, 0)


async def test_a_rejected_send_is_failed_not_duplicated(fresh_moto, tmp_path):
    """A 4xx for the whole batch means nothing was applied: failed, not duplicates_possible."""
    sqs = _sqs(fresh_moto)
    dlq, _ = make_pair(sqs, "reject")
    fill(sqs, dlq, 5)
    qt = tools(fresh_moto, tmp_path)

    def invalid(params: dict[str, Any], **_: Any) -> None:
        params["Entries"] = params["Entries"] + [dict(params["Entries"][0])]  # duplicate entry ids: 400

    qt.sqs.clients.client("sqs", retries=False).meta.events.register(
        "provide-client-params.sqs.SendMessageBatch", invalid)
    res = await qt.redrive("reject-dlq", None, 1000, None, dry_run=False)
    assert res.status == "stopped" and len(res.failed) == 5 and not res.duplicates_possible and res.moved == 0
    assert visible(sqs, dlq) == (5, 0)


async def test_one_entry_failing_to_delete_is_a_possible_duplicate(fresh_moto, tmp_path):
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "del")
    fill(sqs, dlq, 10)
    qt = tools(fresh_moto, tmp_path)

    def spoil_one(params: dict[str, Any], **_: Any) -> None:
        params["Entries"][0]["ReceiptHandle"] = "not-a-receipt-handle"

    qt.sqs.clients.client("sqs").meta.events.register("provide-client-params.sqs.DeleteMessageBatch", spoil_one)
    res = await qt.redrive("del-dlq", None, 1000, None, dry_run=False)
    assert res.status == "partial" and res.moved == 9 and len(res.duplicates_possible) == 1
    left = drain_queue(sqs, dlq)
    arrived = drain_queue(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"])
    assert [m["MessageId"] for m in left] == res.duplicates_possible
    assert len(arrived) == 10 and left[0]["Body"] in {m["Body"] for m in arrived}


async def test_routes_explicit_target_several_sources_self_and_kind_mismatch(fresh_moto, tmp_path):
    sqs = _sqs(fresh_moto)
    dlq, _ = make_pair(sqs, "multi", sources=2)
    fill(sqs, dlq, 4)
    sqs.create_queue(QueueName="elsewhere")
    fifo_dlq, _ = make_pair(sqs, "ff", fifo=True)
    fill(sqs, fifo_dlq, 4, groups=2)
    qt = tools(fresh_moto, tmp_path)
    from opsmcp.errors import InvalidInput

    with pytest.raises(InvalidInput, match="DLQ of several queues: multi, multi-1"):
        await qt.redrive("multi-dlq", None, 100, None, dry_run=True)
    with pytest.raises(InvalidInput, match="target is the DLQ itself"):
        await qt.redrive("multi-dlq", "multi-dlq", 100, None, dry_run=True)
    with pytest.raises(InvalidInput, match="is FIFO but the DLQ multi-dlq is not"):
        await qt.redrive("multi-dlq", "ff.fifo", 100, None, dry_run=True)
    res = await qt.redrive("multi-dlq", "multi-1", 100, None, dry_run=False)
    assert res.target == "multi-1" and res.moved == 4
    assert visible(sqs, sqs.get_queue_url(QueueName="multi-1")["QueueUrl"]) == (4, 0)
    explicit = await qt.redrive("ff-dlq.fifo", "elsewhere", 100, None, dry_run=False)
    assert explicit.moved == 4 and any("group ids and FIFO order are not kept" in n for n in explicit.notes)
    assert visible(sqs, sqs.get_queue_url(QueueName="elsewhere")["QueueUrl"]) == (4, 0)


# ---------------------------------------------------------------- point 12 ------------


async def test_one_approved_call_moves_a_whole_fifo_dlq_in_group_order(fresh_moto, tmp_path):
    """300 FIFO dead letters in 6 groups: one preview and one real call move all of them,
    each group in order (it used to take ~30 preview-and-approve rounds)."""
    from mcp import Client

    from opsmcp.server import build_server

    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "pay", fifo=True)
    fill(sqs, dlq, 300, groups=6)
    server, _ = build_server(make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"],
                                           write_approval="prompt-or-confirm"))
    async with Client(server) as client:
        preview = await call(client, "redrive_dlq", queue="pay-dlq.fifo")
        assert preview["matched"] == 300 and not preview["matched_exact"]
        with pytest.raises(ToolFailed, match=r"Move up to 300 message\(s\) from FIFO DLQ pay-dlq.fifo") as needs:
            await call(client, "redrive_dlq", queue="pay-dlq.fifo", dry_run=False)  # shows the preview
        token = re.search(r'approval_token="([^"]+)"', str(needs.value)).group(1)  # type: ignore[union-attr]
        fill(sqs, dlq, 5, groups=1, tag="late")  # late arrivals after the preview: not approved, not moved
        res = await call(client, "redrive_dlq", queue="pay-dlq.fifo", dry_run=False, confirm=True,
                         approval_token=token)
    assert res["moved"] == 300 and res["status"] == "complete" and res["remaining"] == 5
    arrived = drain_queue(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"])
    per_group: dict[str, list[int]] = {}
    for m in arrived:
        body = json.loads(m["Body"])
        assert m["Attributes"]["MessageGroupId"] == body["group"]
        per_group.setdefault(body["group"], []).append(body["seq"])
    assert sum(map(len, per_group.values())) == 300
    assert all(seqs == sorted(seqs) for seqs in per_group.values())


async def test_a_filtered_fifo_move_stops_each_group_at_its_first_other_message(fresh_moto, tmp_path):
    """With a signature filter a group moves only up to its first non-matching message, so a
    later message never overtakes an earlier one; the preview names an upper bound."""
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "flt", fifo=True)
    fill(sqs, dlq, 30, groups=3)  # message i has ErrorCode Other when i % 3 == 0: all of group g0
    qt = tools(fresh_moto, tmp_path)
    preview = await qt.redrive("flt-dlq.fifo", None, 1000, "Boom", dry_run=True)
    assert 20 <= preview.matched < 30 and not preview.matched_exact  # 30 less g0's non-matching messages read
    res = await qt.redrive("flt-dlq.fifo", None, preview.matched, "Boom", dry_run=False)
    assert res.moved == 20 and visible(sqs, dlq) == (10, 0)
    src_url = sqs.get_queue_url(QueueName=src)["QueueUrl"]
    groups = Counter(json.loads(m["Body"])["group"] for m in drain_queue(sqs, src_url))
    assert groups == {"g1": 10, "g2": 10}


# ---------------------------------------------------------------- point 13 ------------


async def test_connection_pool_matches_the_worker_limit(fresh_moto, tmp_path, caplog):
    """Sixty concurrent calls: at most WORKER_THREADS run at once and each finds a pooled
    connection, so urllib3 never logs "Connection pool is full" (it did with 32 < 40)."""
    import logging

    from opsmcp.backends.aws import WORKER_THREADS, aws_limiter

    qt = tools(fresh_moto, tmp_path)
    assert qt.sqs.clients.client("sqs").meta.config.max_pool_connections == WORKER_THREADS
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(qt.sqs.list_urls)
    assert aws_limiter().total_tokens == WORKER_THREADS
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


async def test_a_redrive_stops_at_its_time_limit_and_says_what_moved(fresh_moto, tmp_path):
    """Issue 19 item 12: the whole move is bounded in time (OPSMCP_REDRIVE_MAX_SECONDS): no new
    batch after the limit, the batch in flight finishes (copy, confirm, delete), and the
    result says what moved, stopped with stop_reason timeout; nothing is lost or doubled."""
    sqs = _sqs(fresh_moto)
    dlq, (src,) = make_pair(sqs, "slowly")
    fill(sqs, dlq, 500)
    qt = tools(fresh_moto, tmp_path, redrive_max_seconds=5)
    start = time.monotonic()
    res = await qt.redrive("slowly-dlq", None, 1000, None, dry_run=False)
    took = time.monotonic() - start
    assert res.status == "stopped" and res.stop_reason == "timeout", (res.status, res.notes)
    assert 0 < res.moved < 500 and not res.duplicates_possible and not res.failed
    assert "OPSMCP_REDRIVE_MAX_SECONDS" in " ".join(res.notes)
    assert took < 5 + 5  # the limit, plus the batch in flight and the release
    arrived = [m["Body"] for m in drain_queue(sqs, sqs.get_queue_url(QueueName=src)["QueueUrl"])]
    left = [m["Body"] for m in drain_queue(sqs, dlq)]
    assert len(arrived) == res.moved and len(set(arrived) | set(left)) == len(arrived) + len(left) == 500
