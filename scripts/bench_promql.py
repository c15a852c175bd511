#!/usr/bin/env python3
"""Benchmark ``query_promql``: latency through opsmcp vs the same query straight to
Prometheus's HTTP API, in the same run, and the size of the answers.

Starts a real Prometheus (Debian's ``prometheus``; ``promtool`` backfills six hours of
generated history, as the tests do: ``tests/promstack.py``) on a free loopback port, then
for each query times ``--runs`` calls (after warm-up) two ways:

* **direct**: ``GET /api/v1/query_range`` with one shared ``httpx.AsyncClient`` and the
  JSON decoded (what any client pays at least);
* **opsmcp**: ``tools/call query_promql`` through an in-memory ``mcp.Client`` (the
  server's choke point, the HTTP call, downsampling, summaries, the result models and
  the size budget; no network transport).

and reports the medians, the mean time inside opsmcp's choke point (``server ms``: the
tool itself, without the in-memory client, which also validates the structured result
against the output schema), and the characters of each answer: Prometheus's raw JSON and the
text content a client hands to a model. The 24-series, 6-hour query is the one peers were
measured on (an unbounded answer of 785k characters).

Usage::

    python scripts/bench_promql.py              # 50 runs per query
    python scripts/bench_promql.py --runs 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import promstack  # noqa: E402  (the tests' Prometheus launcher and generated history)

from opsmcp.config import Settings  # noqa: E402
from opsmcp.server import build_server  # noqa: E402
from opsmcp.times import iso  # noqa: E402

QUERIES = [  # (label, PromQL, step seconds)
    ("1 series, 6 h, step 60 s", "sqs_dlq_depth", 60),
    ("24 series, 6 h, step 15 s", "queue_depth", 15),
    ("24 series, 6 h, step 60 s", "queue_depth", 60),
]


async def run(runs: int) -> None:
    end_s = int(time.time()) // 60 * 60 - 120
    with tempfile.TemporaryDirectory() as work:
        prom, _ = promstack.start_prometheus(Path(work) / "prom", end=end_s)
        try:
            end = datetime.fromtimestamp(end_s, UTC)
            start = end - timedelta(hours=6)
            settings = Settings(data_dir=Path(work) / "data", prometheus_url=prom.url, toolsets=["prometheus"])
            server, runtime = build_server(settings)
            from mcp import Client

            print(f"Prometheus {prom.url}; {runs} runs per query after 5 warm-up calls; medians")
            print(f"{'query':28} {'direct ms':>10} {'opsmcp ms':>10} {'extra ms':>9} {'server ms':>10} "
                  f"{'raw chars':>10} {'answer chars':>13}")
            async with httpx.AsyncClient(base_url=prom.url) as http, Client(server) as client:
                for label, query, step in QUERIES:
                    params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
                              "step": str(step)}
                    args = {"query": query, "start": iso(start), "end": iso(end), "step_seconds": step}

                    async def direct(params: dict[str, str] = params) -> int:
                        resp = await http.get("/api/v1/query_range", params=params)
                        resp.json()
                        return len(resp.text)

                    async def through(args: dict[str, object] = args) -> int:
                        result = await client.call_tool("query_promql", args)
                        assert not result.is_error, result.content
                        return sum(len(getattr(c, "text", "")) for c in result.content)

                    for _ in range(5):
                        raw_chars = await direct()
                        answer_chars = await through()
                    t_direct, t_ops = [], []
                    calls0 = runtime.stats.calls.get("query_promql", 0)
                    secs0 = runtime.stats.seconds.get("query_promql", 0.0)
                    for _ in range(runs):  # interleaved, so load drifts hit both alike
                        t0 = time.perf_counter()
                        await direct()
                        t_direct.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        await through()
                        t_ops.append(time.perf_counter() - t0)
                    d, o = statistics.median(t_direct) * 1000, statistics.median(t_ops) * 1000
                    n = runtime.stats.calls["query_promql"] - calls0
                    server_ms = (runtime.stats.seconds["query_promql"] - secs0) / n * 1000
                    print(f"{label:28} {d:10.2f} {o:10.2f} {o - d:9.2f} {server_ms:10.2f} "
                          f"{raw_chars:10,} {answer_chars:13,}")
        finally:
            promstack.stop(prom.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed calls per query and path (default 50)")
    args = parser.parse_args()
    if not (promstack.PROMETHEUS and promstack.PROMTOOL):
        sys.exit(promstack.MISSING)
    asyncio.run(run(args.runs))


if __name__ == "__main__":
    main()
