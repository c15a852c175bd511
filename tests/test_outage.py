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

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import make_settings
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
