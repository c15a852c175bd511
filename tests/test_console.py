"""The console's data at load (``/api/console/*``: failure groups through the shared DLQ read
analyze_dlq uses, the
last hour of depths, key metrics, writes from the audit log, alerts from the store), the
``/events`` listener caps and the heap hand-back (issue 19, item 11), and the bounded
depth ring. Against a real moto server and the real HTTP app."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest
from helpers import (
    HOSTILE_SUMMARY,
    alert_payload,
    bearer,
    console_server,
    make_settings,
    mcp_call,
    team_tokens,
    visible,
)

from opsmcp.calls import events as events_module
from opsmcp.calls.depth_history import DepthHistory
from opsmcp.calls.events import EventHub, ListenerLimit


# ----------------------------------------------------------------- the depth ring ----

def test_the_depth_ring_keeps_one_hour_bounded_per_queue_and_in_queues():
    ring = DepthHistory(window=100, spacing=10, max_queues=2)
    for second in range(1000):  # unchanged depth every second: one sample per 10 s, last 100 s kept
        ring.record("steady", 5, at=float(second))
    kept = ring.read(now=999.0)["queues"]["steady"]
    assert 10 <= len(kept) <= 11 and kept[0][0] >= 899 and {d for _, d in kept} == {5}
    for i in range(500):  # a depth that changes every poll: at most 2 x window / spacing samples
        ring.record("busy", i, at=1000 + i * 0.1)
    assert len(ring.rings["busy"]) == ring.per_queue == 20 and ring.rings["busy"][-1][1] == 499
    ring.record("third", 1, at=1000.0)
    answer = ring.read(now=1050.0)
    assert "third" not in answer["queues"] and answer["untracked"] == 1 and answer["since"] >= 950
    ring.forget("steady")
    assert "steady" not in ring.read()["queues"]


# ----------------------------------------------------------------- listener caps -----

async def test_the_hub_caps_listeners_per_identity_and_in_total():
    hub = EventHub(max_listeners=3, max_per_owner=2)
    first = hub.add(owner="alice")
    hub.add(owner="alice")
    with pytest.raises(ListenerLimit, match=r"alice has 2 .*OPSMCP_EVENTS_MAX_LISTENERS_PER_IDENTITY=2"):
        hub.add(owner="alice")
    hub.add(owner="bob")
    with pytest.raises(ListenerLimit, match=r"3 /events listeners .*OPSMCP_EVENTS_MAX_LISTENERS=3"):
        hub.add(owner="carol")
    hub.remove(first)
    hub.remove(first)  # idempotent: alice's count does not go below what she holds
    assert hub.per_owner == {"alice": 1, "bob": 1} and hub.refused_total == 2
    hub.add(owner="carol")
    assert len(hub.listeners) == 3


async def test_the_hub_hands_the_heap_back_once_after_a_burst_of_leaving_listeners(monkeypatch):
    trims: list[float] = []
    monkeypatch.setattr(events_module, "give_back", lambda: trims.append(time.monotonic()) or True)
    monkeypatch.setattr(events_module, "TRIM_DELAY_SECONDS", 0.05)
    hub = EventHub(max_listeners=1000, max_per_owner=1000)
    listeners = [hub.add(owner="probe") for _ in range(300)]
    for listener in listeners:
        hub.remove(listener)
    with anyio.fail_after(10):
        while not trims:
            await anyio.sleep(0.01)
    await anyio.sleep(0.2)  # a second trim would have been scheduled by now
    assert len(trims) == 1 and hub.trims == 1 and not hub.listeners and not hub.per_owner
    for _ in range(10):  # a few leaving later do not trim again
        hub.remove(hub.add(owner="probe"))
    await anyio.sleep(0.2)
    assert len(trims) == 1


def test_give_back_returns_a_fragmented_heap_to_the_os():
    """Blocks freed between survivors stay in the process until malloc_trim returns them."""
    import psutil

    from opsmcp.calls.heap import give_back

    process = psutil.Process()
    blocks = [bytearray(2048) for _ in range(50_000)]  # ~100 MB in the C heap
    survivors = blocks[::64]  # pinned across the heap: nothing at its top is free
    del blocks
    before = process.memory_info().rss
    assert give_back(), "malloc_trim should exist on this glibc system"
    after = process.memory_info().rss
    assert before - after > 50 * 2**20, f"RSS fell only {(before - after) / 2**20:.0f} MiB"
    assert len(survivors) == 782


def test_events_answers_503_past_the_caps_and_takes_listeners_again_when_one_leaves(fresh_moto, tmp_path):
    from helpers import Feed, serve_app

    keys = team_tokens(tmp_path, {"alice": ["ops:read"], "bob": ["ops:read"]})
    settings = make_settings(fresh_moto, tmp_path, toolsets=["queues"], tokens_file=tmp_path / "tokens.jsonl",
                             events_max_listeners=3, events_max_listeners_per_identity=2)
    with serve_app(settings) as (base, runtime), httpx.Client(timeout=30) as http:
        open_feeds = []
        for who in ("alice", "alice"):
            feed = Feed(http, f"{base}/events", headers=bearer(keys[who]))
            assert feed.response.status_code == 200 and feed.next()[1] == "hello"
            open_feeds.append(feed)
        refused = _refusal(http, f"{base}/events", keys["alice"])
        assert refused.headers["retry-after"] == "30"
        assert "OPSMCP_EVENTS_MAX_LISTENERS_PER_IDENTITY=2" in refused.json()["error"]
        bobs = Feed(http, f"{base}/events", headers=bearer(keys["bob"]))
        assert bobs.response.status_code == 200 and bobs.next()[1] == "hello"
        full = _refusal(http, f"{base}/events", keys["bob"])
        assert "OPSMCP_EVENTS_MAX_LISTENERS=3" in full.json()["error"]
        open_feeds[0].close()
        deadline = time.monotonic() + 15
        while len(runtime.events.listeners) > 2:  # the server notices the closed stream
            assert time.monotonic() < deadline, "the closed feed was never removed"
            time.sleep(0.05)
        again = Feed(http, f"{base}/events", headers=bearer(keys["bob"]))
        assert again.response.status_code == 200 and again.next()[1] == "hello"
        assert runtime.events.per_owner == {"alice": 1, "bob": 2}
        for feed in (open_feeds[1], bobs, again):
            feed.close()


def _refusal(http: httpx.Client, url: str, token: str) -> httpx.Response:
    """GET ``url`` as a stream and assert it was refused with 503 (a stream that was accepted
    would never end); returns the read response."""
    with http.stream("GET", url, headers=bearer(token)) as response:
        assert response.status_code == 503, f"answered {response.status_code}, not 503"
        response.read()
    return response


# ----------------------------------------------------------------- /api/console ------

def test_the_console_api_serves_every_panel_at_load(fresh_moto, tmp_path):
    dlq = "order-cancellation-queue-dlq"
    with console_server(fresh_moto, tmp_path) as (base, _runtime, keys), \
            httpx.Client(base_url=base, timeout=120, headers=bearer(keys["viewer"])) as http:
        # Before anyone opens the page: a real redrive (preview, then the real call with its token).
        preview = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=2))
        done = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=2,
                                          dry_run=False, confirm=True, approval_token=preview["approval"]["token"]))
        assert done["moved"] == 2
        posted = http.post("/webhooks/alertmanager", json=alert_payload(), headers=bearer(keys["alertmanager"]))
        assert posted.status_code == 200, posted.text

        writes = http.get("/api/console/writes", params={"limit": 5}).json()
        real = [w for w in writes["writes"] if not w["dry_run"]]
        assert real[0]["tool"] == "redrive_dlq" and real[0]["caller"] == "agent" and real[0]["outcome"] == "complete"
        assert real[0]["counts"]["moved"] == 2 and real[0]["arguments"]["queue"] == dlq
        assert any(w["dry_run"] for w in writes["writes"])  # the preview is history too
        assert "writes[].arguments" in writes["untrusted"]

        depths_before = {q: visible(fresh_moto, q) for q in ("order-queue-dlq", "payment-queue-dlq.fifo", dlq)}
        groups = http.get("/api/console/groups").json()
        assert [d["queue"] for d in groups["dlqs"]] == sorted(depths_before, key=lambda q: -depths_before[q])
        for shown in groups["dlqs"]:  # the very signatures analyze_dlq gives an agent, from the very same read
            agent_view = anyio.run(lambda q=shown["queue"]: mcp_call(base, keys["agent"], "analyze_dlq", queue=q))
            assert agent_view["age_seconds"] > 0, "the console read the DLQ apart from the shared read"
            assert [(g["signature"], g["count"]) for g in shown["groups"]] == [
                (g["signature"], g["count"]) for g in agent_view["groups"]]
            assert sum(g["count"] for g in shown["groups"]) == shown["depth"] == depths_before[shown["queue"]]
            assert all(len(g["order_ids"]) <= 5 for g in shown["groups"])
        assert any(g["order_ids"] for d in groups["dlqs"] for g in d["groups"])
        assert {q: visible(fresh_moto, q) for q in depths_before} == depths_before  # released, not hidden
        assert http.get("/api/console/groups").json()["dlqs"] == groups["dlqs"]  # reused: depths unchanged

        metrics = http.get("/api/console/metrics").json()
        assert [c["title"] for c in metrics["charts"]] == ["Errors per minute", "p95 latency, ms"]
        for chart in metrics["charts"]:
            assert chart["error"] is None and chart["omitted"] == 0 and len(chart["lines"]) == 6
            assert all(55 <= len(line["points"]) <= 61 for line in chart["lines"])
        latency = {line["label"]: max(v for _, v in line["points"]) for line in metrics["charts"][1]["lines"]}
        assert latency["order-processor"] > 2000 > latency["notification-service"]  # the incident shows

        depths = http.get("/api/console/depths").json()
        assert sorted(depths["dlqs"]) == sorted(depths_before) and depths["available"]
        for name in depths_before:  # nobody listened yet: the hour comes from CloudWatch
            assert len(depths["cloudwatch"][name]) >= 55
        assert depths["cloudwatch"]["order-queue-dlq"][-1][1] == depths_before["order-queue-dlq"]

        alerts = http.get("/api/console/alerts").json()
        assert alerts["alerts"][0]["summary"] == HOSTILE_SUMMARY and alerts["firing"] == 1
        assert "alerts[].summary" in alerts["untrusted"]

        for path in ("groups", "depths", "metrics", "writes", "alerts"):
            assert httpx.get(f"{base}/api/console/{path}").status_code == 401
            refused = httpx.get(f"{base}/api/console/{path}", headers=bearer(keys["approver_only"]))
            assert refused.status_code == 403 and "ops:read" in refused.json()["error"]
            assert refused.headers["cache-control"] == "no-store"
        for bad in ("0", "201", "ten", "-1"):
            answer = http.get("/api/console/writes", params={"limit": bad})
            assert answer.status_code == 400 and "1 to 200" in answer.json()["error"]


def test_while_someone_listens_the_depth_ring_fills_and_metrics_events_arrive(fresh_moto, tmp_path):
    from helpers import Feed, send_dead_letters

    with console_server(fresh_moto, tmp_path, console_cache_seconds=1) as (base, runtime, keys), \
            httpx.Client(base_url=base, timeout=60, headers=bearer(keys["viewer"])) as http:
        feed = Feed(http, f"{base}/events?types=queue_depth")
        before = feed.until(lambda f: f[1] == "queue_depth" and f[2]["queue"] == "order-queue-dlq")[2]["visible"]
        time.sleep(1.5)  # 1.5 intervals: a listener that does not take metrics events reads no CloudWatch
        assert runtime.events.latest("metrics") == []
        feed.close()
        feed = Feed(http, f"{base}/events?types=queue_depth,metrics")
        send_dead_letters(fresh_moto, "order-queue-dlq", 3)
        feed.until(lambda f: f[1] == "queue_depth" and f[2]["queue"] == "order-queue-dlq"
                   and f[2]["visible"] + f[2]["in_flight"] == before + 3)
        depths = http.get("/api/console/depths").json()
        metrics = [feed.until(lambda f: f[1] == "metrics")[2] for _ in range(2)]  # one a second
        feed.close()
        deadline = time.monotonic() + 15
        while runtime.events.listeners:
            assert time.monotonic() < deadline, "the closed feed was never removed"
            time.sleep(0.05)
        time.sleep(1.2)  # a metrics read already under way may still publish once
        published = len(runtime.events.latest("metrics"))
        time.sleep(2.5)  # 2.5 intervals: a feed still running would publish twice more
        assert len(runtime.events.latest("metrics")) == published, "metrics kept coming with nobody listening"
    ring = depths["queues"]["order-queue-dlq"]
    assert depths["polling"] and ring[-1][1] == before + 3 and ring[0][1] == before
    assert all(t < ring[0][0] for t, _ in depths["cloudwatch"]["order-queue-dlq"])  # CloudWatch only before
    for event in metrics:
        assert [c["title"] for c in event["charts"]] == ["Errors per minute", "p95 latency, ms"]
        assert all(len(line["points"]) == 5 for c in event["charts"] for line in c["lines"])  # the newest only


# ----------------------------------------------------------------- small parts -------

async def test_shared_reads_once_for_concurrent_callers_and_keeps_no_failure():
    from opsmcp.transport.console_panels import Shared

    now = [0.0]
    shared: Shared[int] = Shared(ttl=30, max_keys=2, clock=lambda: now[0])
    reads: list[str] = []
    gate = anyio.Event()

    async def slow() -> int:
        reads.append("slow")
        await gate.wait()
        return len(reads)

    got: list[int] = []
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: _append(got, shared.get("dlq", slow)))
        await anyio.sleep(0.05)
        gate.set()
    assert got == [1] * 5 and reads == ["slow"]
    assert await shared.get("dlq", slow) == 1  # kept
    assert await shared.get("dlq", slow, still_good=lambda v: False) == 2  # the depth changed: read again
    now[0] = 31.0
    assert await shared.get("dlq", slow) == 3  # too old

    async def broken() -> int:
        raise OSError("down")

    with pytest.raises(OSError):
        await shared.get("other", broken)
    assert "other" not in shared._kept
    for key in ("a", "b", "c"):
        await shared.get(key, slow)
    assert len(shared._kept) == 2  # bounded


async def _append(out: list[int], awaitable: Any) -> None:
    out.append(await awaitable)


def test_the_file_audit_tail_reads_from_the_end(tmp_path, monkeypatch):
    """tail(n) gives what reading the whole file gave (torn line included) while reading
    only the blocks at its end."""
    from opsmcp.calls import audit

    path = tmp_path / "audit.jsonl"
    lines = [json.dumps({"call_id": str(i), "pad": "x" * (i % 300)}) + "\n" for i in range(3000)]
    lines[2990] = '{"torn": \n'
    path.write_text("".join(lines))

    def whole(n: int) -> list[dict[str, Any]]:
        out = []
        for line in path.read_text().splitlines(keepends=True)[-n:] if n > 0 else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unreadable": line.rstrip("\n")})
        return out

    for block in (65_536, 7):
        monkeypatch.setattr(audit, "TAIL_BLOCK_BYTES", block, raising=False)
        for n in (0, 1, 9, 10, 11, 500, 2999, 3000, 5000):
            assert audit.read_tail(path, n) == whole(n), (block, n)
    assert audit.read_tail(path, 10)[0] == {"unreadable": '{"torn": '}
    read: list[int] = []
    real_open = open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        fh = real_open(*args, **kwargs)
        original = fh.read
        fh.read = lambda size=-1: (read.append(size), original(size))[1]
        return fh

    monkeypatch.setattr(audit, "TAIL_BLOCK_BYTES", 65_536, raising=False)
    monkeypatch.setattr("builtins.open", counting_open)
    audit.read_tail(path, 20)
    assert read and sum(read) <= 65_536 < path.stat().st_size
