"""MCP prompts, resources, completions and queue subscriptions, through mcp.Client against a
moto server seeded with the sandbox scenario (both protocol eras where they differ)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import make_settings
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference, ResourceTemplateReference, ResourceUpdatedNotification

from opsmcp.catalog import packaged_catalog, packaged_runbooks
from opsmcp.server import build_server
from opsmcp.surface.subscriptions import queue_watch

pytestmark = pytest.mark.anyio

ALL_PROMPTS = {"triage_dlq", "explain_order", "health_check"}


@pytest.fixture(scope="module")
def seeded_moto(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's moto server, reset and seeded once for this module (queues and orders)."""
    import boto3

    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10).read()
    settings = make_settings(moto_endpoint, tmp_path_factory.mktemp("seed"))
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    yield type("Seeded", (), {"endpoint": moto_endpoint, "scenario": scenario,
                              "sqs": boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")})


def server_for(seeded_moto: Any, tmp_path: Path, **overrides: Any) -> Any:
    overrides.setdefault("resource_poll_seconds", 0.1)
    server, _ = build_server(make_settings(seeded_moto.endpoint, tmp_path / "data", **overrides))
    return server


async def error_of(awaitable: Any) -> Any:
    """The JSON-RPC error an MCP request ended with."""
    with pytest.raises(MCPError) as err:
        await awaitable
    return err.value.error


# --------------------------------------------------------------------------- prompts


async def test_prompts_are_listed_by_enabled_toolsets(seeded_moto: Any, tmp_path: Path) -> None:
    async with Client(server_for(seeded_moto, tmp_path)) as client:
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(listed) == ALL_PROMPTS  # no alerts toolset: no investigate_alert
    queue_arg = listed["triage_dlq"].arguments[0]
    assert (queue_arg.name, queue_arg.required) == ("queue", True) and "dead-letter queue" in queue_arg.description
    assert listed["explain_order"].arguments[0].description and listed["health_check"].arguments == []
    for toolsets, expected in ((["orders"], {"explain_order"}), (["logs"], {"health_check"}),
                               (["queues"], {"triage_dlq", "health_check"})):
        async with Client(server_for(seeded_moto, tmp_path, toolsets=toolsets)) as client:
            assert {p.name for p in (await client.list_prompts()).prompts} == expected, toolsets


async def test_prompts_name_the_shortest_tool_path(seeded_moto: Any, tmp_path: Path) -> None:
    async with Client(server_for(seeded_moto, tmp_path, allow_writes=True)) as client:
        triage = (await client.get_prompt("triage_dlq", {"queue": "order-queue-dlq"})).messages[0].content.text
        order = (await client.get_prompt("explain_order", {"order_id": "o-123"})).messages[0].content.text
        health = (await client.get_prompt("health_check", {})).messages[0].content.text
    assert 'analyze_dlq(queue="order-queue-dlq")' in triage
    assert 'dimensions={"QueueName": "order-queue-dlq"}' in triage
    assert 'redrive_dlq(queue="order-queue-dlq", signature=' in triage and "dry_run=true" in triage
    assert "A good answer cites" in triage and "opsmcp://runbooks/order-db-timeout" in triage
    assert 'get_order(order_id="o-123")' in order and "get_trace(" in order
    assert "list_queues()" in health and "log_stats(" in health
    async with Client(server_for(seeded_moto, tmp_path, toolsets=["queues"])) as client:  # read-only, no logs
        triage = (await client.get_prompt("triage_dlq", {"queue": "order-queue-dlq"})).messages[0].content.text
    assert "analyze_dlq" in triage and "get_trace" not in triage and "redrive_dlq" not in triage
    assert triage.startswith("Triage") and "\n1. analyze_dlq" in triage and "\n2." not in triage


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_bad_prompt_requests_are_invalid_params(seeded_moto: Any, tmp_path: Path, mode: str) -> None:
    """Regression (issue 12): the SDK answered an unknown prompt with -32603."""
    async with Client(server_for(seeded_moto, tmp_path), mode=mode) as client:
        unknown = await error_of(client.get_prompt("triage_dql", {"queue": "x"}))
        missing = await error_of(client.get_prompt("triage_dlq", {}))
        extra = await error_of(client.get_prompt("health_check", {"queue": "x"}))
        long = await error_of(client.get_prompt("triage_dlq", {"queue": "q" * 500}))
    assert unknown.code == -32602 and "Did you mean 'triage_dlq'" in unknown.message
    assert missing.code == -32602 and "missing queue" in missing.message
    assert extra.code == -32602 and "unknown argument(s) queue" in extra.message
    assert long.code == -32602 and "at most 200" in long.message


async def stored_alerts(data_dir: Path) -> None:
    """Two alerts (fingerprints a1b2c3 firing, ffee01 resolved) in the data directory's alert store."""
    from opsmcp.backends.alertstore import FileAlertStore, parse_webhook

    alerts = [{"status": "firing", "fingerprint": "a1b2c3", "labels": {"alertname": "DLQGrowing"}},
              {"status": "resolved", "fingerprint": "ffee01", "labels": {"alertname": "HighLatency"}}]
    await FileAlertStore(data_dir / "alerts.json").record(parse_webhook({"version": "4", "alerts": alerts}))


async def test_investigate_alert_only_with_an_alerts_toolset(seeded_moto: Any, tmp_path: Path) -> None:
    await stored_alerts(tmp_path / "data")
    async with Client(server_for(seeded_moto, tmp_path, alertmanager_url="http://127.0.0.1:9")) as client:
        listed = {p.name for p in (await client.list_prompts()).prompts}
        text = (await client.get_prompt("investigate_alert", {"fingerprint": "a1b2c3"})).messages[0].content.text
        done = await client.complete(PromptReference(type="ref/prompt", name="investigate_alert"),
                                     {"name": "fingerprint", "value": "ff"})
        everything = await client.complete(PromptReference(type="ref/prompt", name="investigate_alert"),
                                           {"name": "fingerprint", "value": ""})
    async with Client(server_for(seeded_moto, tmp_path)) as client:
        without = {p.name for p in (await client.list_prompts()).prompts}
    assert listed == ALL_PROMPTS | {"investigate_alert"} and without == ALL_PROMPTS
    assert 'get_alert(fingerprint="a1b2c3")' in text and "list_alerts()" not in text
    assert done.completion.values == ["ffee01"]
    assert everything.completion.values == ["a1b2c3", "ffee01"]


# --------------------------------------------------------------------------- resources


async def test_resources_list_templates_and_read(seeded_moto: Any, tmp_path: Path) -> None:
    async with Client(server_for(seeded_moto, tmp_path)) as client:
        listed = {r.uri: r for r in (await client.list_resources()).resources}
        templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
        catalog = (await client.read_resource("opsmcp://playbooks/catalog")).contents[0]
        source = (await client.read_resource("opsmcp://playbooks/rotate_log")).contents[0]
        runbook = (await client.read_resource("opsmcp://runbooks/payment-gateway-timeout")).contents[0]
        dlq = (await client.read_resource("opsmcp://queues/order-queue-dlq")).contents[0]
        fifo = json.loads((await client.read_resource("opsmcp://queues/payment-queue.fifo")).contents[0].text)
    runbooks = {p.stem for p in packaged_runbooks().glob("*.md")}
    assert {"collect_diagnostics", "cleanup_old_files", "rotate_log", "restart_worker", "order-db-timeout",
            "payment-gateway-timeout", "cancellation-already-shipped"} <= runbooks
    assert {f"opsmcp://runbooks/{n}" for n in runbooks} <= set(listed)
    assert {"opsmcp://playbooks/catalog", "opsmcp://playbooks/rotate_log"} <= set(listed)
    assert listed["opsmcp://runbooks/rotate_log"].mime_type == "text/markdown"
    assert set(templates) == {"opsmcp://playbooks/{name}", "opsmcp://runbooks/{name}", "opsmcp://queues/{name}"}
    assert catalog.mime_type == "application/yaml" and catalog.text == packaged_catalog().read_text()
    assert source.text == (packaged_catalog().parent / "playbooks" / "rotate_log.yml").read_text()
    assert "GatewayTimeout" in runbook.text and runbook.mime_type == "text/markdown"
    state = json.loads(dlq.text)
    letters = sum(1 for d in seeded_moto.scenario.dead_letters if d.queue == "order-queue-dlq")
    assert dlq.mime_type == "application/json"
    assert state["visible"] + state["in_flight"] == letters and state["is_dlq"] is True
    assert state["source_queues"] == ["order-queue"] and state["dlq"] is None
    assert (fifo["fifo"], fifo["dlq"], fifo["max_receive_count"]) == (True, "payment-queue-dlq.fifo", 3)


@pytest.mark.parametrize(("uri", "says"), [
    ("opsmcp://nothing/x", "opsmcp serves: opsmcp://playbooks/catalog, opsmcp://playbooks/{name}"),
    ("opsmcp://runbooks/rotate_lg", "Did you mean 'rotate_log'"),
    ("opsmcp://playbooks/restart", "Did you mean 'restart_worker'"),
    ("opsmcp://queues/order-queue-dql", "order-queue-dlq"),
    ("opsmcp://queues/bad%20name", "is not a queue name"),
])
async def test_unknown_resources_are_invalid_params(seeded_moto: Any, tmp_path: Path, uri: str, says: str) -> None:
    async with Client(server_for(seeded_moto, tmp_path)) as client:
        error = await error_of(client.read_resource(uri))
    assert error.code == -32602 and says in error.message, error


async def test_resources_follow_enabled_toolsets(seeded_moto: Any, tmp_path: Path) -> None:
    async with Client(server_for(seeded_moto, tmp_path, toolsets=["orders"])) as client:
        uris = {r.uri for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert not any(u.startswith("opsmcp://playbooks/") for u in uris)
    assert templates == {"opsmcp://runbooks/{name}"}  # runbooks always; no queues, no playbooks


async def test_completions(seeded_moto: Any, tmp_path: Path) -> None:
    async with Client(server_for(seeded_moto, tmp_path)) as client:
        async def values(ref: Any, name: str, typed: str) -> list[str]:
            return (await client.complete(ref, {"name": name, "value": typed})).completion.values

        triage = await values(PromptReference(type="ref/prompt", name="triage_dlq"), "queue", "order")
        queues = await values(ResourceTemplateReference(type="ref/resource", uri="opsmcp://queues/{name}"),
                              "name", "pay")
        books = await values(ResourceTemplateReference(type="ref/resource", uri="opsmcp://playbooks/{name}"),
                             "name", "r")
        runbooks = await values(ResourceTemplateReference(type="ref/resource", uri="opsmcp://runbooks/{name}"),
                                "name", "timeout")
        none = await values(PromptReference(type="ref/prompt", name="explain_order"), "order_id", "x")
    assert triage == ["order-cancellation-queue-dlq", "order-queue-dlq", "order-cancellation-queue", "order-queue"]
    assert queues == ["payment-queue-dlq.fifo", "payment-queue.fifo"]
    assert books == ["restart_worker", "rotate_log"]
    assert runbooks == ["order-db-timeout", "payment-gateway-timeout"]
    assert none == []


# --------------------------------------------------------------------------- subscriptions


def _dead_letter(seeded_moto: Any, queue: str) -> None:
    url = seeded_moto.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    seeded_moto.sqs.send_message(QueueUrl=url, MessageBody='{"type": "ORDER_CANCELLED", "test": true}')


async def test_listen_stream_hears_queue_depth_changes(seeded_moto: Any, tmp_path: Path) -> None:
    """Protocol 2026-07-28: a subscriptions/listen stream naming a queue resource gets a
    resource-updated event when the queue's depth changes, and the poller stops after."""
    server = server_for(seeded_moto, tmp_path)
    uri = "opsmcp://queues/order-cancellation-queue-dlq"
    async with Client(server, cache=None) as client:
        before = json.loads((await client.read_resource(uri)).contents[0].text)
        async with client.listen(resource_subscriptions=[uri]) as sub:
            watch = queue_watch(server)
            assert watch is not None and watch.watched() == [uri]
            _dead_letter(seeded_moto, "order-cancellation-queue-dlq")
            with anyio.fail_after(10):
                event = await sub.__anext__()
        assert event.uri == uri
        after = json.loads((await client.read_resource(uri)).contents[0].text)
    assert after["visible"] + after["in_flight"] == before["visible"] + before["in_flight"] + 1
    assert watch.watched() == []
    with anyio.fail_after(5):
        while watch._task is not None and not watch._task.done():
            await anyio.sleep(0.05)  # the poller ends within one poll interval once nobody listens


async def test_legacy_subscribe_notifies_and_refuses_what_cannot_change(seeded_moto: Any, tmp_path: Path) -> None:
    """Protocol 2025-11-25: resources/subscribe, notifications/resources/updated, unsubscribe."""
    server = server_for(seeded_moto, tmp_path)
    uri = "opsmcp://queues/order-queue-dlq"
    updates: list[str] = []
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            got.set()

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        caps = client.server_capabilities
        assert caps.resources.subscribe and caps.prompts and caps.completions is not None
        await client.subscribe_resource(uri)
        _dead_letter(seeded_moto, "order-queue-dlq")
        with anyio.fail_after(10):
            await got.wait()
        await client.unsubscribe_resource(uri)
        runbook = await error_of(client.subscribe_resource("opsmcp://runbooks/rotate_log"))
        missing = await error_of(client.subscribe_resource("opsmcp://queues/no-such-queue"))
    assert updates == [uri]
    assert runbook.code == -32602 and "Only queue resources" in runbook.message
    assert missing.code == -32602 and "no-such-queue" in missing.message
    watch = queue_watch(server)
    assert watch is not None and watch.watched() == []
    async with Client(server, mode="legacy") as client:  # a client that leaves without unsubscribing
        await client.subscribe_resource(uri)
        assert watch.watched() == [uri]
    with anyio.fail_after(5):
        while watch.watched():
            await anyio.sleep(0.05)  # the connection's teardown drops its subscriptions
