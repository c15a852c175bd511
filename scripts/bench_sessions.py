"""Concurrent sessions doing the triage path: 1 -> 200 streamable-HTTP sessions against
``opsmcp serve --transport http`` on its embedded sandbox (no AWS configured), each level
bounded in time. Throughput, p50/p99 per call, errors and the server's RSS per level, with
ratios to one session in the same run.

The triage path (the server's instructions): list_queues(prefix='order') ->
analyze_dlq('order-queue-dlq') -> get_trace(a trace id of its biggest group) ->
search_logs('timeout') -> get_order(an order id of that group); each session repeats it
until its level's ``--seconds`` are up (a call that starts before the end is finished and
counted). Concurrent analyze_dlq calls share one read (age_seconds > 0), as they would in
production. The driver, the server and the sandbox's moto (inside the server process) share
the machine's cores; RSS and CPU are the server process and its children (psutil). Every
level first opens all its sessions (``initialize``), then starts its clock.

Usage: python scripts/bench_sessions.py [--levels 1 10 50 100 200] [--seconds 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import OPSMCP, HttpServer, free_port, machine, pct, table


def server_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its children, MiB."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def start_sandbox() -> HttpServer:
    """``opsmcp serve --transport http`` with no AWS configured (the sandbox), ready to answer."""
    home = tempfile.mkdtemp(prefix="opsmcp-bench-home-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(HOME=home, OPSMCP_DATA_DIR=os.path.join(home, "data"), AWS_EC2_METADATA_DISABLED="true")
    port = free_port()
    server = HttpServer([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env, port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)  # readiness poll with a deadline
    server.stop()
    raise SystemExit("the sandbox server was not ready within 120 s")


async def triage_ids(url: str) -> tuple[str, str]:
    """A trace id and an order id from analyze_dlq's biggest group."""
    from mcp import Client

    async with Client(url) as client:
        result = await client.call_tool("analyze_dlq", {"queue": "order-queue-dlq"})
    group = (result.structured_content or {})["groups"][0]
    return group["trace_ids"][0], group["order_ids"][0]


def _cpu(proc: Any) -> float:
    """CPU seconds of ``proc`` and its children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # a child that just exited
            pass
    return total


async def level(url: str, server_pid: int, sessions: int, seconds: float, trace: str, order: str,
                open_limit: float = 120.0) -> dict[str, Any]:
    """``sessions`` concurrent sessions: all opened first (at most ``open_limit`` s), then each
    loops the triage path for ``seconds``."""
    import anyio
    from mcp import Client

    path = [("list_queues", {"prefix": "order"}), ("analyze_dlq", {"queue": "order-queue-dlq"}),
            ("get_trace", {"trace_id": trace}), ("search_logs", {"query": "timeout", "limit": 20}),
            ("get_order", {"order_id": order})]
    latencies: list[float] = []
    by_tool: dict[str, list[float]] = {}
    errors: list[str] = []
    opened: list[float] = []
    shared = [0]
    go = anyio.Event()
    stop_at = [0.0]

    async def session(n: int) -> None:
        try:
            t0 = time.perf_counter()
            async with Client(url) as client:
                opened.append(time.perf_counter() - t0)
                if len(opened) == sessions:
                    go.set()
                await go.wait()
                i = n % len(path)  # sessions start at different steps
                while time.monotonic() < stop_at[0]:
                    tool, args = path[i % len(path)]
                    t = time.perf_counter()
                    result = await client.call_tool(tool, args)
                    latencies.append((time.perf_counter() - t) * 1000)
                    by_tool.setdefault(tool, []).append(latencies[-1])
                    if result.is_error:
                        errors.append(f"{tool}: {result.content[0].text[:120] if result.content else ''}")
                    elif tool == "analyze_dlq" and (result.structured_content or {}).get("age_seconds", 0) > 0:
                        shared[0] += 1
                    i += 1
        except Exception as exc:  # a broken session is an error, counted, not a crash of the driver
            while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                exc = exc.exceptions[0]  # type: ignore[assignment]
            errors.append(f"session {n}: {type(exc).__name__}: {exc}")
            if not go.is_set() and len(opened) + len(errors) >= sessions:
                go.set()

    import psutil

    server_proc, me = psutil.Process(server_pid), psutil.Process()
    async with anyio.create_task_group() as tg:
        for n in range(sessions):
            tg.start_soon(session, n)
        with anyio.move_on_after(open_limit):
            await go.wait()  # every session open (or failed): the clock starts
        go.set()
        open_s = max(opened, default=0.0)
        cpu0 = (_cpu(server_proc), _cpu(me))
        t0 = time.perf_counter()
        stop_at[0] = time.monotonic() + seconds
    wall = time.perf_counter() - t0
    cpu_server, cpu_driver = _cpu(server_proc) - cpu0[0], _cpu(me) - cpu0[1]
    calls = max(1, len(latencies))
    return {"calls": len(latencies), "errors": errors, "wall": wall, "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99), "rate": len(latencies) / wall, "open_p50": pct(opened, 0.5) * 1000,
            "open_max": open_s, "server_cpu_ms": cpu_server / calls * 1000, "driver_cpu_ms": cpu_driver / calls * 1000,
            "shared": shared[0], "by_tool": by_tool}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=15.0, help="time bound of each level (default 15)")
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()

    import anyio

    print(f"== concurrent sessions doing the triage path (sandbox, streamable HTTP) ==\noptions: levels {opts.levels}, "
          f"{opts.seconds:g} s each, rounds {opts.rounds}\nstart: {machine()}")
    t_all = time.perf_counter()
    server = start_sandbox()
    try:
        print(f"sandbox ready in {time.perf_counter() - t_all:.1f} s; RSS {server_rss_mib(server.pid):.0f} MiB",
              flush=True)
        url = server.url
        trace, order = anyio.run(triage_ids, url)
        results: dict[int, list[dict[str, Any]]] = {}
        for r in range(opts.rounds):
            for n in opts.levels:
                before = server_rss_mib(server.pid)
                row = anyio.run(level, url, server.pid, n, opts.seconds, trace, order)
                row["rss_before"], row["rss_after"] = before, server_rss_mib(server.pid)
                results.setdefault(n, []).append(row)
                print(f"round {r + 1}, {n} sessions: {row['calls']} calls, {len(row['errors'])} errors, "
                      f"{row['rate']:.1f} calls/s, p99 {row['p99']:.0f} ms, RSS {row['rss_after']:.0f} MiB; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        server.stop()
    base = min(x["rate"] for x in results[opts.levels[0]])
    rows = []
    for n, xs in results.items():
        def span(key: str, fmt: str = ".0f", xs: list[dict[str, Any]] = xs) -> str:
            return f"{min(x[key] for x in xs):{fmt}}-{max(x[key] for x in xs):{fmt}}"
        rows.append([n, span("calls"), sum(len(x["errors"]) for x in xs), span("rate", ".1f"),
                     f"{min(x['rate'] for x in xs) / base:.1f}x", span("p50"), span("p99"), span("open_max", ".1f"),
                     span("server_cpu_ms"), span("driver_cpu_ms"), span("shared"), span("rss_after")])
    print(table(["sessions", "calls", "errors (all rounds)", "calls/s", "calls/s vs 1", "p50 ms", "p99 ms",
                 "all open after s", "server CPU ms/call", "driver CPU ms/call", "analyze_dlq shared",
                 "server RSS MiB after"], rows))
    tools = ["list_queues", "analyze_dlq", "get_trace", "search_logs", "get_order"]
    print(table(["sessions (last round)", *(f"{tool} p50/p99 ms" for tool in tools)],
                [[n, *(f"{pct(xs[-1]['by_tool'].get(t, []), 0.5):.0f}/{pct(xs[-1]['by_tool'].get(t, []), 0.99):.0f}"
                       for t in tools)] for n, xs in results.items()]))
    for n, xs in results.items():
        for e in sorted({e for x in xs for e in x["errors"]})[:5]:
            print(f"error ({n} sessions): {e}")
    print(f"end: {machine()}; wall {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
