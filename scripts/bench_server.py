"""Benchmark the server core: cold start, sandbox start, and per-tool overhead over raw boto3.

Prints, all from one run against one moto server on loopback:
  * stdio cold start: spawn `opsmcp serve` (AWS endpoint configured, no sandbox) until the
    `tools/list` answer arrives; and with the embedded sandbox: `tools/list` and the first
    tool answer (sandbox seeded);
  * per read tool: median / p95 latency through the MCP client (in memory and over stdio)
    next to the raw boto3 calls the tool makes, and the overhead (tool - raw).

Usage: python scripts/bench_server.py [--runs 30] [--starts 5]

The issue-13 benchmarks (cold start against a bare SDK server, overhead at 1/8/32 clients,
memory, load) are scripts/bench_coldstart.py, bench_overhead.py, bench_memory.py and
bench_load.py; docs/performance.md has their commands and figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
OPSMCP = str(Path(sys.executable).parent / "opsmcp")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def cold_start(env: dict[str, str], args: list[str], first_call: bool) -> tuple[float, float | None]:
    from mcp import Client, StdioServerParameters

    t0 = time.perf_counter()
    async with Client(StdioServerParameters(command=OPSMCP, args=args, env=env)) as client:
        await client.list_tools()
        listed = time.perf_counter() - t0
        called = None
        if first_call:
            await client.call_tool("list_queues", {})
            called = time.perf_counter() - t0
    return listed, called


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def atimed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


class EchoOut(BaseModel):
    """The trivial tool's result."""

    x: int


async def echo(n: int = 1) -> EchoOut:
    """Return ``n``: no I/O, so its latency is the SDK's own."""
    return EchoOut(x=n)


async def sdk_floor(runs: int) -> float:
    """Median ms of a trivial tool (no I/O) through mcp.Client in memory: the SDK's own cost."""
    from mcp import Client
    from mcp.server import MCPServer

    server = MCPServer("floor", log_level="WARNING")
    server.add_tool(echo, name="echo")
    async with Client(server) as client:
        await client.call_tool("echo", {"n": 1})
        return statistics.median(await atimed(lambda: client.call_tool("echo", {"n": 1}), max(runs, 100)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--starts", type=int, default=5)
    opts = parser.parse_args()

    import boto3
    from mcp import Client, StdioServerParameters

    from opsmcp.config import Settings
    from opsmcp.sandbox import start_moto
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    moto, endpoint = start_moto()
    data = tempfile.mkdtemp()
    settings = Settings(aws_endpoint_url=endpoint, data_dir=Path(data), toolsets=["queues", "orders"])
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
    env.update(AWS_ENDPOINT_URL=endpoint, OPSMCP_DATA_DIR=data)
    starts = [(await cold_start(env, ["serve"], False))[0] for _ in range(opts.starts)]
    sandbox_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    sandbox_env["HOME"] = data
    sb = [await cold_start(sandbox_env, ["serve", "--sandbox"], True) for _ in range(max(2, opts.starts // 2))]
    print("== start-up (median of runs) ==")
    print(f"stdio cold start to tools/list, AWS endpoint configured: {statistics.median(starts) * 1000:7.0f} ms "
          f"(runs {', '.join(f'{s * 1000:.0f}' for s in starts)})")
    listed = statistics.median([s[0] for s in sb]) * 1000
    answered = statistics.median([s[1] for s in sb if s[1] is not None]) * 1000
    print(f"stdio cold start to tools/list, embedded sandbox:        {listed:7.0f} ms")
    print(f"  ... to the first tool answer (sandbox seeded):       {answered:7.0f} ms")

    sqs = boto3.client("sqs", endpoint_url=endpoint)
    ddb = boto3.client("dynamodb", endpoint_url=endpoint)
    dlq = sqs.get_queue_url(QueueName="order-cancellation-queue-dlq")["QueueUrl"]
    order = scenario.orders[3]["orderId"]

    def raw_list():
        for u in sqs.list_queues(MaxResults=100)["QueueUrls"]:
            sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["All"])

    def raw_peek():
        url = sqs.get_queue_url(QueueName="notification-queue")["QueueUrl"]
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5, VisibilityTimeout=0, AttributeNames=["All"],
                            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])

    def raw_analyze():
        sqs.get_queue_url(QueueName="order-cancellation-queue-dlq")
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])
        for u in sqs.list_queues(MaxResults=1000)["QueueUrls"]:  # which queues feed this DLQ
            sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["All"])
        handles = []
        while True:
            m = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=120,
                                    AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            if not m:
                break
            handles += [x["ReceiptHandle"] for x in m]
        for i in range(0, len(handles), 10):
            sqs.change_message_visibility_batch(QueueUrl=dlq, Entries=[
                {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0} for n, h in enumerate(handles[i:i + 10])])

    def raw_get():
        ddb.get_item(TableName="orders", Key={"orderId": {"S": order}}, ConsistentRead=True)

    def raw_find():
        ddb.query(TableName="orders", IndexName="status-index",
                  KeyConditionExpression="#k = :k AND #d BETWEEN :a AND :b",
                  ExpressionAttributeNames={"#k": "status", "#d": "orderDate"},
                  ExpressionAttributeValues={":k": {"S": "PENDING"}, ":a": {"S": "1970"}, ":b": {"S": "2100"}},
                  Limit=20, ScanIndexForward=False)

    cases = [
        ("list_queues", {}, raw_list),
        ("peek_messages", {"queue": "notification-queue", "max_messages": 5}, raw_peek),
        ("analyze_dlq", {"queue": "order-cancellation-queue-dlq"}, raw_analyze),
        ("get_order", {"order_id": order}, raw_get),
        ("find_orders", {"status": "PENDING", "limit": 20}, raw_find),
    ]
    server, _ = build_server(settings)
    rows = []
    async with Client(server) as mem, Client(StdioServerParameters(command=OPSMCP, args=["serve"], env=env)) as stdio:
        for name, args, raw in cases:
            for c in (mem, stdio):  # warm up clients and caches
                r = await c.call_tool(name, args)
                assert not r.is_error, r.content
            raw()
            raw_ms = timed(raw, opts.runs)
            mem_ms = await atimed(lambda n=name, a=args: mem.call_tool(n, a), opts.runs)
            direct_ms = await atimed(lambda n=name, a=args: server.call_tool(n, a), opts.runs)  # server side only
            io_ms = await atimed(lambda n=name, a=args: stdio.call_tool(n, a), opts.runs)
            raw_ms2 = timed(raw, opts.runs)  # again, to bracket drift in moto
            hop_ms = await atimed(lambda r=raw: anyio.to_thread.run_sync(r), opts.runs)
            raw_all = raw_ms + raw_ms2
            rows.append((name, statistics.median(raw_all), pct(raw_all, .95), statistics.median(hop_ms),
                         statistics.median(direct_ms), statistics.median(mem_ms), pct(mem_ms, .95),
                         statistics.median(io_ms), pct(io_ms, .95)))
    print(f"\n== per-call latency, ms (median / p95 of {opts.runs} calls; raw = the boto3 calls the tool makes) ==")
    print("(raw in thread = the same boto3 calls run off the event loop, as an async server must;")
    print(" server only = MCPServer.call_tool without a client: the choke point, toolset and conversion;")
    print(" the in-memory and stdio columns add the SDK client, which validates structuredContent with jsonschema)")
    print(f"{'tool':15} {'raw boto3':>15} {'raw in thread':>13} {'server only':>11} {'MCP in-memory':>15} "
          f"{'MCP stdio':>15} {'over raw: server':>16} {'mem':>7} {'stdio':>7}")
    for name, rm, rp, hm, dm, mm, mp, sm, sp in rows:
        print(f"{name:15} {rm:7.2f} / {rp:5.2f} {hm:13.2f} {dm:11.2f} {mm:7.2f} / {mp:5.2f} {sm:7.2f} / {sp:5.2f} "
              f"{dm - rm:+16.2f} {mm - rm:+7.2f} {sm - rm:+7.2f}")
    print(f"SDK floor: a trivial tool through the in-memory client takes {await sdk_floor(opts.runs):.2f} ms")
    moto.stop()


if __name__ == "__main__":
    anyio.run(main)
