"""list_queues against the number of queues: 10, 100, 1,000 queues on moto (its own process),
through the in-memory MCP client (so the size budget applies as in a real call).

Half the queues are sources with a DLQ (the other half), each DLQ holding a few messages.
For each count: one call with the default limit (100), the whole listing by paging with
``limit=100`` (pages, seconds), and one call with ``limit=1000`` (seconds, JSON bytes of the
answer, queues returned, whether the size budget cut it). Ratios are to the smallest count
in the same run; ``--rounds`` repeats every measurement (min-max shown).

Usage: python scripts/bench_list_queues.py [--queues 10 100 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import machine, table


def create(endpoint: str, prefix: str, n: int) -> None:
    """``n`` queues named ``<prefix>-NNNN``: pairs of source and DLQ, 3 messages in each DLQ."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")

    def pair(i: int) -> None:
        dlq = sqs.create_queue(QueueName=f"{prefix}-{i:04d}-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(QueueName=f"{prefix}-{i:04d}", Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})})
        sqs.send_message_batch(QueueUrl=dlq, Entries=[{"Id": str(k), "MessageBody": json.dumps({"n": k})}
                                                      for k in range(3)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pair, range(n // 2)))


async def measure(endpoint: str, prefix: str) -> dict[str, Any]:
    """The three calls of the module docstring against the queues named ``<prefix>-*``."""
    from mcp import Client

    from opsmcp.config import Settings
    from opsmcp.server import build_server

    settings = Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", toolsets=["queues"],
                        data_dir=Path(tempfile.mkdtemp(prefix="opsmcp-bench-")))
    server, _ = build_server(settings)
    async with Client(server) as client:
        await client.call_tool("list_queues", {"prefix": prefix, "limit": 1})  # the client's first request apart
        t0 = time.perf_counter()
        first = await client.call_tool("list_queues", {"prefix": prefix})
        default_s = time.perf_counter() - t0
        pages, listed, cursor = 0, 0, None
        t0 = time.perf_counter()
        while True:
            args: dict[str, Any] = {"prefix": prefix, "limit": 100}
            if cursor:
                args["cursor"] = cursor
            page = (await client.call_tool("list_queues", args)).structured_content or {}
            pages += 1
            listed += page.get("count", 0)
            cursor = page.get("next_cursor")
            if not cursor:
                break
        paged_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        big = await client.call_tool("list_queues", {"prefix": prefix, "limit": 1000})
        big_s = time.perf_counter() - t0
    content = big.structured_content or {}
    return {"default_s": default_s, "default_bytes": len(json.dumps(first.structured_content)),
            "pages": pages, "listed": listed, "paged_s": paged_s, "big_s": big_s,
            "big_bytes": len(json.dumps(content, separators=(",", ":"))), "big_count": content.get("count"),
            "big_cut": content.get("truncated"), "notes": content.get("notes", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()

    import anyio
    from moto_process import MotoProcess

    print(f"== list_queues against the number of queues ==\noptions: queues {opts.queues}, rounds {opts.rounds}\n"
          f"start: {machine()}")
    t_all = time.perf_counter()
    moto = MotoProcess().start()
    try:
        t0 = time.perf_counter()
        for n in opts.queues:
            create(moto.endpoint, f"c{n}", n)
        print(f"created {sum(opts.queues):,} queues in {time.perf_counter() - t0:.0f} s", flush=True)
        runs: dict[int, list[dict[str, Any]]] = {}
        for r in range(opts.rounds):
            for n in opts.queues:
                runs.setdefault(n, []).append(anyio.run(measure, moto.endpoint, f"c{n}-"))
                print(f"round {r + 1}, {n} queues done", flush=True)
    finally:
        moto.stop()

    def span(key: str, n: int) -> str:
        xs = [x[key] for x in runs[n]]
        return f"{min(xs):.2f}-{max(xs):.2f}"

    small = opts.queues[0]
    base = min(x["big_s"] for x in runs[small])
    rows = []
    for n, xs in runs.items():
        last = xs[-1]
        rows.append([f"{n:,}", span("default_s", n), f"{last['default_bytes']:,}",
                     f"{last['pages']} ({last['listed']})", span("paged_s", n), span("big_s", n),
                     f"{min(x['big_s'] for x in xs) / base:.1f}x",
                     f"{last['big_bytes']:,}", f"{last['big_count']}{' (cut)' if last['big_cut'] else ''}"])
    print(table(["queues", "limit 100: s", "bytes", "pages of 100 (queues)", "all pages: s", "limit 1000: s",
                 "ratio", "limit 1000: bytes", "limit 1000: queues returned"], rows))
    for n, xs in runs.items():
        for note in xs[-1]["notes"]:
            print(f"note ({n} queues, limit 1000): {note}")
    print(f"end: {machine()}; wall {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
