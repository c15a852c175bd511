"""Load: ``--sessions`` (50) concurrent streamable-HTTP sessions x ``--calls`` (200) calls each
against ``opsmcp serve --transport http`` on a seeded moto server (its own process).

Each session alternates ``get_order`` and ``find_orders(status=PENDING, limit=5)``. Reports
errors (tool errors and exceptions), p50/p99 latency, throughput, and the server's RSS
before and after (client, moto and server share the machine's cores).

Usage: python scripts/bench_load.py [--sessions 50] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import anyio
from benchlib import machine, opsmcp_http, pct, rss_mib, seeded_backend, table


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    opts = parser.parse_args()

    from mcp import Client

    backend = seeded_backend()
    server = opsmcp_http(backend, toolsets="queues,orders")
    latencies: list[float] = []
    errors: list[str] = []
    try:
        async with Client(server.url) as client:
            await client.call_tool("get_order", {"order_id": backend.order_id})
        before = rss_mib(server.pid)
        calls = [("get_order", {"order_id": backend.order_id}), ("find_orders", {"status": "PENDING", "limit": 5})]

        async def session(n: int) -> None:
            try:
                async with Client(server.url) as client:
                    for i in range(opts.calls):
                        tool, args = calls[(n + i) % 2]
                        t = time.perf_counter()
                        result = await client.call_tool(tool, args)
                        latencies.append((time.perf_counter() - t) * 1000)
                        if result.is_error:
                            errors.append(f"{tool}: {result.content[0].text[:120] if result.content else ''}")
            except Exception as exc:  # a session that breaks is an error, counted, not a crash of the driver
                errors.append(f"session {n}: {type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(opts.sessions):
                tg.start_soon(session, n)
        wall = time.perf_counter() - t0
        after = rss_mib(server.pid)
    finally:
        server.stop()
        backend.stop()
    total = opts.sessions * opts.calls
    print(f"== load: {opts.sessions} concurrent streamable-HTTP sessions x {opts.calls} calls ==\n{machine()}")
    print(table(["calls", "answered", "errors", "p50 ms", "p99 ms", "mean ms", "calls/s", "wall s", "RSS before MiB",
                 "RSS after MiB"],
                [[total, len(latencies), len(errors), statistics.median(latencies), pct(latencies, .99),
                  statistics.fmean(latencies), len(latencies) / wall, wall, before, after]]))
    for line in errors[:10]:
        print("error:", line)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    anyio.run(main)
