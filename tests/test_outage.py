"""Backend outage drill: the AWS endpoint goes away during a run of calls, then comes back.

A real moto server runs in its own process (:mod:`moto_process`) on a fixed loopback port;
opsmcp (in memory, through ``mcp.Client``) calls it from four concurrent workers.

* **killed**: SIGKILL the moto process mid-run. Every call that ends after the kill returns
  a tool error naming the endpoint (``http://127.0.0.1:PORT``) within 5 s of its start (or
  of the kill, for calls in flight). Then moto starts again on the same port (re-seeded:
  a new moto process starts empty) and the same client, on the same server, succeeds.
* **stalled**: SIGSTOP the moto process (the port still accepts connections, nothing
  answers), as a hung backend does; the same 5 s bound, then SIGCONT and success.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import drain_queue, make_settings
from moto_process import MotoProcess

BOUND_SECONDS = 5.0
WORKERS = 4


@dataclass
class Outcome:
    """One call: when it started and ended (monotonic s), and what came back."""

    tool: str
    start: float
    end: float
    is_error: bool
    text: str


def _calls(order_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("get_order", {"order_id": order_id}),
        ("list_queues", {}),
        ("find_orders", {"status": "PENDING", "limit": 5}),
        ("get_order", {"order_id": order_id}),
        ("peek_messages", {"queue": "notification-queue", "max_messages": 1}),
    ]


async def _run(client: Any, calls: list[tuple[str, dict[str, Any]]], outcomes: list[Outcome],
               stop: anyio.Event, worker: int) -> None:
    i = worker
    while not stop.is_set():
        tool, arguments = calls[i % len(calls)]
        i += 1
        start = time.monotonic()
        result = await client.call_tool(tool, arguments)
        text = " ".join(getattr(c, "text", "") for c in result.content)
        outcomes.append(Outcome(tool, start, time.monotonic(), bool(result.is_error), text))


async def _drill(tmp_path: Path, break_backend: str) -> dict[str, Any]:
    """Run the drill with ``break_backend`` ``"kill"`` or ``"stop"``; return what was measured."""
    from mcp import Client

    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    moto = MotoProcess().start()
    try:
        settings = make_settings(moto.endpoint, tmp_path, toolsets=["queues", "orders"])
        scenario = build_scenario()
        seed_aws(settings, scenario, metrics=False)
        calls = _calls(scenario.orders[0]["orderId"])
        server, _ = build_server(settings)
        async with Client(server) as client:
            outcomes: list[Outcome] = []
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for w in range(WORKERS):
                    tg.start_soon(_run, client, calls, outcomes, stop, w)
                with anyio.fail_after(60):
                    while len(outcomes) < 20:  # a run of healthy calls first
                        await anyio.wait_all_tasks_blocked()
                        await anyio.lowlevel.checkpoint()
                pid = moto.pid
                assert pid is not None
                broke_at = time.monotonic()
                if break_backend == "kill":
                    await anyio.to_thread.run_sync(moto.stop)
                else:
                    os.kill(pid, signal.SIGSTOP)
                wanted = 2 * WORKERS if break_backend == "kill" else WORKERS  # a stalled call is slow
                try:
                    with anyio.fail_after(120):
                        while sum(o.start > broke_at for o in outcomes) < wanted:
                            await anyio.wait_all_tasks_blocked()
                            await anyio.lowlevel.checkpoint()
                    stop.set()
                finally:
                    resumed_at = time.monotonic()  # killed: restarted only after the workers stopped
                    if break_backend == "stop":
                        os.kill(pid, signal.SIGCONT)
            if break_backend == "kill":
                resumed_at = float("inf")
            healthy = [o for o in outcomes if o.end < broke_at]
            during = [o for o in outcomes if o.end >= broke_at]
            if break_backend == "kill":
                await anyio.to_thread.run_sync(moto.start)  # same port, empty state
                seed_aws(settings, scenario, metrics=False)
            after = []
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                after.append((tool, bool(result.is_error), " ".join(getattr(c, "text", "") for c in result.content)))
    finally:
        moto.stop()
    return {"endpoint": moto.endpoint, "broke_at": broke_at, "resumed_at": resumed_at, "healthy": healthy,
            "during": during, "after": after}


def _check(found: dict[str, Any]) -> list[str]:
    """The drill's failures as readable lines (empty: it passed)."""
    problems = [f"before the outage: {o.tool} failed: {o.text[:200]}" for o in found["healthy"] if o.is_error]
    for o in found["during"]:
        took = o.end - max(o.start, found["broke_at"])
        if took > BOUND_SECONDS:
            problems.append(f"{o.tool} took {took:.1f} s to answer with the backend down (bound {BOUND_SECONDS} s)")
        if o.start > found["broke_at"] and o.end < found["resumed_at"] and not o.is_error:
            problems.append(f"{o.tool} succeeded with the backend down: {o.text[:100]}")
        if o.is_error and found["endpoint"] not in o.text:
            problems.append(f"{o.tool}'s error does not name {found['endpoint']}: {o.text[:200]}")
        if "Internal error" in o.text:
            problems.append(f"{o.tool} reached the internal-error path: {o.text[:200]}")
    problems += [f"after recovery: {tool} failed: {text[:200]}" for tool, is_error, text in found["after"] if is_error]
    return problems


def _slowest(found: dict[str, Any]) -> float:
    return max(o.end - max(o.start, found["broke_at"]) for o in found["during"])


@pytest.mark.timeout(300)
async def test_killed_backend_gives_endpoint_errors_within_5s_then_recovers(tmp_path: Path) -> None:
    found = await _drill(tmp_path, "kill")
    print(f"killed backend: {len(found['during'])} calls during the outage, slowest {_slowest(found):.2f} s")
    problems = _check(found)
    assert not problems, "\n".join(problems)
    assert len(found["during"]) >= 2 * WORKERS


@pytest.mark.timeout(300)
async def test_stalled_backend_gives_endpoint_errors_within_5s_then_recovers(tmp_path: Path) -> None:
    found = await _drill(tmp_path, "stop")
    slowest = _slowest(found)
    print(f"stalled backend: {len(found['during'])} calls during the stall, slowest {slowest:.2f} s")
    problems = _check(found)
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stalled_backend_mid_redrive_answers_within_5s_with_what_moved(tmp_path: Path,
                                                                             anyio_backend: str) -> None:
    """Regression (issue 19 item 12): a backend that stalls in the middle of an approved
    redrive held redrive_dlq for 13.5 s (the stalled receive, then the release, then the
    count, 4.5 s each) against the documented 5 s. Now the whole call answers within 5 s of
    the stall with what moved so far (status stopped, stop_reason backend), and nothing is
    lost: once the backend is back and the hold has run out, every message is in the DLQ or
    the source queue, and those in both were reported in duplicates_possible."""

    import boto3
    from mcp import Client

    from opsmcp.server import build_server

    total = 100
    moto = MotoProcess().start()
    try:
        settings = make_settings(moto.endpoint, tmp_path, toolsets=["queues"], allow_writes=True,
                                 redrive_hold_seconds=5, write_approval="prompt-or-confirm")
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="stall-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        source = sqs.create_queue(QueueName="stall", Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})["QueueUrl"]
        body_of = {}
        for start in range(0, total, 10):
            entries = [{"Id": str(i), "MessageBody": f"message-{i:04d}"} for i in range(start, start + 10)]
            for ok in sqs.send_message_batch(QueueUrl=dlq, Entries=entries)["Successful"]:
                body_of[ok["MessageId"]] = f"message-{int(ok['Id']):04d}"

        def depth(url: str) -> int:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

        server, _ = build_server(settings)
        answered: dict[str, Any] = {}
        async with Client(server) as client:
            preview = await client.call_tool("redrive_dlq", {"queue": "stall-dlq"})
            token = (preview.structured_content or {}).get("approval", {}).get("token")
            assert token, preview

            async def move() -> None:
                answered["result"] = await client.call_tool("redrive_dlq", {
                    "queue": "stall-dlq", "dry_run": False, "confirm": True, "approval_token": token})
                answered["at"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(move)
                with anyio.fail_after(120):
                    while await anyio.to_thread.run_sync(depth, source) < 20:  # some batches moved
                        await anyio.sleep(0.05)
                assert moto.pid is not None
                os.kill(moto.pid, signal.SIGSTOP)
                stalled_at = time.monotonic()
                try:
                    with anyio.fail_after(60):
                        while "at" not in answered:
                            await anyio.sleep(0.02)
                finally:
                    os.kill(moto.pid, signal.SIGCONT)
        took = answered["at"] - stalled_at
        result = answered["result"].structured_content
        print(f"stalled redrive answered {took:.2f} s after the stall: moved {result['moved']}, "
              f"duplicates_possible {len(result['duplicates_possible'])}, notes {result['notes']}")
        assert took <= BOUND_SECONDS, f"answered {took:.2f} s after the stall (bound {BOUND_SECONDS} s)"
        assert result["status"] == "stopped" and result["stop_reason"] == "backend", result
        assert 0 < result["moved"] < total and moto.endpoint in " ".join(result["notes"])
        # nothing lost: after the hold every message is visible in one queue or both (reported)
        def hidden() -> int:
            return sum(int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
                "ApproximateNumberOfMessagesNotVisible"]) for url in (dlq, source))

        with anyio.fail_after(60):
            while await anyio.to_thread.run_sync(hidden):  # held messages come back when the hold runs out
                await anyio.sleep(0.2)
        in_dlq = {m["Body"] for m in await anyio.to_thread.run_sync(drain_queue, sqs, dlq)}
        in_source = [m["Body"] for m in await anyio.to_thread.run_sync(drain_queue, sqs, source)]
        assert in_dlq | set(in_source) == set(body_of.values())
        assert len(in_source) == len(set(in_source))  # never sent twice
        assert in_dlq & set(in_source) <= {body_of[i] for i in result["duplicates_possible"]}
        # moved: confirmed deleted; a delete whose answer the stall swallowed may still have been applied
        only_source = len(set(in_source) - in_dlq)
        assert result["moved"] <= only_source <= result["moved"] + len(result["duplicates_possible"])
    finally:
        moto.stop()
