"""Memory of ``opsmcp serve --transport http --allow-writes``: RSS at idle and its growth after
each workload, measured on the server process (moto runs in its own process).

Phases, in this order, each reported as RSS after it and growth over the RSS before it:
  1. idle: after start-up and one ``tools/list``; then after one ``get_order`` (boto3 is
     imported on the first call: the baseline for growth);
  2. ``--calls`` (10,000) ``get_order`` calls in one session (``--inflight`` at a time);
  3. ``--spread`` (1,000) calls spread over ``--sessions`` (50) sessions, one after another;
  4. ``--dry-runs`` (75) ``redrive_dlq`` dry runs with distinct 1 MB ``signature`` values.
Target: growth <= 20 MB in each of 2-4.

Usage: python scripts/bench_memory.py [--calls 10000] [--spread 1000] [--sessions 50] [--dry-runs 75]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import anyio
from benchlib import machine, opsmcp_http, rss_mib, seeded_backend, table


async def calls_in_session(url: str, calls: int, inflight: int, order_id: str) -> int:
    """``calls`` get_order calls on one session, ``inflight`` at a time; return the errors."""
    from mcp import Client

    errors = 0

    async def worker(client: Client, n: int) -> None:
        nonlocal errors
        for _ in range(n):
            result = await client.call_tool("get_order", {"order_id": order_id})
            errors += bool(result.is_error)

    async with Client(url) as client, anyio.create_task_group() as tg:
        for i in range(inflight):
            tg.start_soon(worker, client, calls // inflight + (i < calls % inflight))
    return errors


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--spread", type=int, default=1_000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--dry-runs", type=int, default=75)
    opts = parser.parse_args()

    from mcp import Client

    backend = seeded_backend()
    server = opsmcp_http(backend, "--allow-writes", toolsets="queues,orders")
    rows: list[list[object]] = []
    try:
        async with Client(server.url) as client:
            await client.list_tools()
        idle = rss_mib(server.pid)
        rows.append(["idle (after start-up and tools/list)", "", idle, "", ""])
        async with Client(server.url) as client:  # loads boto3 and builds the DynamoDB client
            await client.call_tool("get_order", {"order_id": backend.order_id})
        last = rss_mib(server.pid)
        rows.append(["after the first get_order (boto3 loaded): the baseline", "", last, f"{last - idle:+.1f}", ""])

        def phase(label: str, errors: int, seconds: float) -> None:
            nonlocal last
            now = rss_mib(server.pid)
            rows.append([label, errors, now, f"{now - last:+.1f}", f"{seconds:.0f}"])
            last = now

        t0 = time.perf_counter()
        errors = await calls_in_session(server.url, opts.calls, opts.inflight, backend.order_id)
        phase(f"{opts.calls:,} get_order, one session ({opts.inflight} in flight)", errors, time.perf_counter() - t0)

        t0 = time.perf_counter()
        errors = 0
        for _ in range(opts.sessions):
            errors += await calls_in_session(server.url, opts.spread // opts.sessions, 1, backend.order_id)
        phase(f"{opts.spread:,} get_order over {opts.sessions} sessions", errors, time.perf_counter() - t0)

        t0 = time.perf_counter()
        errors = 0
        async with Client(server.url) as client:
            for i in range(opts.dry_runs):
                signature = f"{i:06d}" + "s" * 1_000_000
                result = await client.call_tool("redrive_dlq", {"queue": "order-cancellation-queue-dlq",
                                                                "signature": signature})
                errors += bool(result.is_error)
        phase(f"{opts.dry_runs} redrive_dlq dry runs, 1 MB signature each", errors, time.perf_counter() - t0)
        audit = backend.data_dir / "audit.jsonl"
        audit_mb = audit.stat().st_size / 1e6 if audit.exists() else 0.0
    finally:
        server.stop()
        backend.stop()
    print(f"== opsmcp server RSS (MiB), streamable HTTP, writes enabled ==\n{machine()}")
    print(table(["phase", "errors", "RSS MiB", "growth MiB", "seconds"], rows))
    print(f"audit log after the dry runs: {audit_mb:.1f} MB; target: growth <= 20 MB per phase")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    anyio.run(main)
