"""The /events feed for custom UIs: typed events with ids, resume, filters, one shared poller,
slow-client drop; against a real moto server and the real Starlette app over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import make_settings

from opsmcp.calls.events import DepthPoller, EventHub

# --------------------------------------------------------------------------- the hub alone


async def test_hub_ids_history_filters_and_resume() -> None:
    hub = EventHub(history=5, buffer=100)
    everything = hub.add()
    alerts = hub.add(frozenset({"alert"}))
    for i in range(8):
        hub.publish("alert" if i % 2 else "tool_call", {"n": i})
    got = [everything.buffer.get_nowait() for _ in range(8)]
    assert [e.id for e in got] == list(range(1, 9))
    assert {e.type for e in got} == {"alert", "tool_call"} and got[0].data["type"] == "tool_call"
    assert [e.data["n"] for e in [alerts.buffer.get_nowait() for _ in range(4)]] == [1, 3, 5, 7]
    assert alerts.buffer.empty()
    # Resume after id 5: the history holds the last 5 events (ids 4..8), so 6, 7, 8 replay.
    resumed = hub.add(last_event_id=5)
    assert [resumed.buffer.get_nowait().id for _ in range(3)] == [6, 7, 8] and resumed.buffer.empty()
    # Resuming from before the history replays only what is kept.
    old = hub.add(last_event_id=0)
    assert old.buffer.qsize() == 5


async def test_slow_listener_is_dropped_and_memory_stays_bounded() -> None:
    hub = EventHub(history=10, buffer=3)
    slow, fast = hub.add(), hub.add()
    for i in range(3):
        hub.publish("tool_call", {"n": i})
        await fast.buffer.get()  # the fast one keeps up
    hub.publish("tool_call", {"n": 3})  # slow's 4th undelivered event: over its buffer of 3
    assert slow.dropped and slow not in hub.listeners and fast in hub.listeners
    assert [e async for e in slow.stream()] == []  # its stream ends at once
    for i in range(10_000):
        hub.publish("tool_call", {"n": i})
        await fast.buffer.get()
    assert len(hub._recent) == 10 and hub.dropped_total == 1


async def test_first_and_last_listener_start_and_stop_the_poller() -> None:
    calls: list[int] = []

    async def list_queues() -> list[dict[str, Any]]:
        calls.append(1)
        return [{"name": "q", "visible": len(calls), "in_flight": 0, "delayed": 0, "dlq": None, "is_dlq": False}]

    hub = EventHub()
    poller = DepthPoller(hub, list_queues, None, interval=0.05)
    hub.on_first_listener, hub.on_last_listener = poller.start, poller.stop
    assert not poller.running
    a, b = hub.add(), hub.add()
    assert poller.running
    await _until(lambda: len(calls) >= 3)
    hub.remove(a)
    assert poller.running
    hub.remove(b)
    assert not poller.running
    stopped_at = len(calls)
    await asyncio.sleep(0.2)  # proving a negative: nothing polls once nobody listens
    assert len(calls) == stopped_at
    depths = [e.data["visible"] for e in hub.latest("queue_depth")]
    assert depths == sorted(depths) and len(depths) == stopped_at  # a change each poll, published once


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(settings) -> Iterator[tuple[str, Any]]:
    """The real HTTP app for ``settings`` under uvicorn on a free loopback port (in a thread);
    yields ``(base url, runtime)`` and stops it."""
    import uvicorn

    from opsmcp.server import build_server
    from opsmcp.transport.app import build_app

    server, runtime = build_server(settings)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server, runtime), host="127.0.0.1", port=port, log_level="warning",
                                       lifespan="on"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", runtime
    finally:
        uv.should_exit = True
        thread.join(15)


class Feed:
    """An SSE client over httpx that collects ``(id, event, data)`` frames."""

    def __init__(self, client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> None:
        self._cm = client.stream("GET", url, headers=headers or {})
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()
        self.events: list[tuple[str | None, str, Any]] = []

    def next(self) -> tuple[str | None, str, Any]:
        ident, kind, data = None, "message", []
        for line in self._lines:
            if line == "":
                if data:
                    frame = (ident, kind, json.loads("\n".join(data)))
                    self.events.append(frame)
                    return frame
                continue
            if line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        raise EOFError("stream ended")

    def until(self, pred, limit: int = 500) -> tuple[str | None, str, Any]:
        for _ in range(limit):
            frame = self.next()
            if pred(frame):
                return frame
        raise AssertionError(f"no matching event among {limit}")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


@pytest.fixture
def seeded_moto(fresh_moto, tmp_path):
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    settings = make_settings(fresh_moto, tmp_path, events_poll_seconds=0.3, toolsets=["queues"])
    seed_aws(settings, build_scenario(), metrics=False)
    return settings


def _send_dead_letters(endpoint: str, queue: str, n: int, code: str = "Timeout", error: str | None = None,
                       order_prefix: str = "ord-new-") -> None:
    """``n`` dead letters with ErrorCode ``code`` and ErrorMessage ``error`` (default
    "Inventory timed out after <i>ms"), order ids ``<order_prefix><i>``."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    for i in range(n):
        body = json.dumps({"orderId": f"{order_prefix}{i}", "type": "OrderCreated"})
        text = error or f"Inventory timed out after {i}ms"
        sqs.send_message(QueueUrl=url, MessageBody=body,
                         MessageAttributes={"ErrorCode": {"DataType": "String", "StringValue": code},
                                            "ErrorMessage": {"DataType": "String", "StringValue": text}})


def test_feed_snapshot_depths_dead_letters_resume_and_filters(seeded_moto, fresh_moto) -> None:
    with serve_app(seeded_moto) as (base, runtime), httpx.Client(timeout=30) as http:
        bad = http.get(f"{base}/events?types=queue_depth,nonsense")
        assert bad.status_code == 400 and "nonsense" in bad.text and "queue_depth" in bad.text
        feed = Feed(http, f"{base}/events")
        assert feed.next()[1] == "hello"
        assert feed.next()[1] == "snapshot"
        first = feed.until(lambda f: f[1] == "queue_depth" and f[2]["queue"] == "order-queue-dlq")
        before = first[2]["visible"]
        assert _eventually(lambda: "order-queue-dlq" in runtime.poller.seen)  # its letters so far are known
        _send_dead_letters(fresh_moto, "order-queue-dlq", 3)
        grown = feed.until(lambda f: f[1] == "queue_depth" and f[2]["queue"] == "order-queue-dlq"
                           and f[2]["visible"] + f[2]["in_flight"] >= before + 3)
        dead = feed.until(lambda f: f[1] == "dlq_message")
        assert dead[2]["queue"] == "order-queue-dlq" and dead[2]["added"] >= 3
        # Only the new dead letters are named: the DLQ's older ones were remembered at start.
        assert [s["signature"] for s in dead[2]["signatures"]] == ["Timeout: Inventory timed out after <n>ms"]
        assert dead[2]["signatures"][0]["count"] == 3 and {m["order_id"] for m in dead[2]["samples"]} == {
            "ord-new-0", "ord-new-1", "ord-new-2"}
        source = feed.until(lambda f: f[1] == "queue_depth" and f[2]["queue"] == "order-queue")
        assert source[2]["dlq"] == "order-queue-dlq"
        last_id = int(grown[0])
        feed.close()

        # Resume: events after last_id replay from the history, no snapshot.
        resumed = Feed(http, f"{base}/events", {"Last-Event-ID": str(last_id)})
        assert resumed.next()[1] == "hello"
        again = resumed.next()
        assert again[1] != "snapshot" and int(again[0]) == last_id + 1
        resumed.close()

        # Filter: only tool_call events, one per call.
        calls = Feed(http, f"{base}/events?types=tool_call")
        calls.next()
        snap = calls.next()
        assert snap[1] == "snapshot" and snap[2]["queues"] == []
        asyncio.run(_call_list_queues(base))
        frame = calls.next()
        assert frame[1] == "tool_call" and frame[2]["tool"] == "list_queues" and frame[2]["ok"] is True
        calls.close()
        assert _eventually(lambda: not runtime.events.listeners and not runtime.poller.running)


def _eventually(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


async def _call_list_queues(base: str) -> None:
    from mcp import Client

    async with Client(f"{base}/mcp") as client:
        result = await client.call_tool("list_queues", {})
        assert not result.is_error


def test_one_poller_however_many_listen(seeded_moto) -> None:
    with serve_app(seeded_moto) as (base, runtime), httpx.Client(timeout=30) as http:
        feeds = [Feed(http, f"{base}/events?types=queue_depth") for _ in range(5)]
        for feed in feeds:
            feed.until(lambda f: f[1] == "queue_depth")
        assert len(runtime.events.listeners) == 5 and runtime.poller.running
        tasks = [t for t in _all_tasks(runtime) if t.get_name() == "opsmcp-events-poller"]
        assert len(tasks) == 1
        polls = runtime.poller.polls
        assert _eventually(lambda: runtime.poller.polls >= polls + 3)
        # Five listeners, yet polls advance at one poller's pace (interval 0.3 s).
        start, n0 = time.monotonic(), runtime.poller.polls
        assert _eventually(lambda: runtime.poller.polls >= n0 + 4)
        rate = (runtime.poller.polls - n0) / (time.monotonic() - start)
        assert rate < 1 / 0.3 * 1.5, f"{rate:.1f} polls/s: more than one poller"
        for feed in feeds:
            feed.close()
        assert _eventually(lambda: not runtime.poller.running)


def _all_tasks(runtime) -> list[asyncio.Task[Any]]:
    task = runtime.poller._task
    loop = task.get_loop() if task is not None else None
    if loop is None:
        return []
    result: list[asyncio.Task[Any]] = []
    done = threading.Event()

    def collect() -> None:
        result.extend(asyncio.all_tasks(loop))
        done.set()

    loop.call_soon_threadsafe(collect)
    done.wait(5)
    return result


def test_cors_only_for_configured_origins(seeded_moto) -> None:
    """A browser page on a configured origin may read /events (preflight answered before
    authentication, CORS headers on the stream); other origins get no CORS and a 403."""
    settings = seeded_moto.model_copy(update={"allowed_origins": ["http://ui.example:8080", "http://localhost:*"],
                                              "http_token": "cors-token"})
    with serve_app(settings) as (base, _), httpx.Client(timeout=30) as http:
        pre = http.options(f"{base}/events", headers={"Origin": "http://localhost:5173",
                                                       "Access-Control-Request-Method": "GET",
                                                       "Access-Control-Request-Headers": "authorization,last-event-id"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        feed = Feed(http, f"{base}/events", {"Origin": "http://ui.example:8080", "Authorization": "Bearer cors-token"})
        assert feed.response.headers["access-control-allow-origin"] == "http://ui.example:8080"
        assert feed.next()[1] == "hello"
        feed.close()
        foreign = http.options(f"{base}/events", headers={"Origin": "http://evil.example",
                                                           "Access-Control-Request-Method": "GET"})
        assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
        no_token = http.get(f"{base}/events", headers={"Origin": "http://ui.example:8080"})
        assert no_token.status_code == 401
