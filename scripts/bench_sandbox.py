"""Benchmark the sandbox start: `opsmcp serve` (no AWS configured) to the first answered `analyze_dlq`.

Each round spawns `opsmcp serve` over stdio in a clean environment (no AWS variables, a
fresh HOME and data dir, so the embedded sandbox starts), and measures from the spawn to:
  * the `tools/list` answer (the server is up; the sandbox may still be seeding);
  * the first answered `analyze_dlq('order-queue-dlq')` (the sandbox is ready and seeded).
The figure that matters is the second one (target: <= 2.5 s on an idle 2-core machine).
Also printed: the CPU time the server process (and the children it waited for) had used
when the answer arrived, from /proc: it hardly depends on other load, so it tells what
the wall time would be on an idle machine when the machine is busy.

With ``--baseline /path/to/other/opsmcp`` the rounds alternate between that executable
(e.g. an older checkout's venv) and this one, so both are measured in the same run on the
same machine load, and the ratio is printed.

Usage: python scripts/bench_sandbox.py [--rounds 5] [--baseline /work/main/.venv/bin/opsmcp]
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

OPSMCP = str(Path(sys.executable).parent / "opsmcp")


def clean_env(home: str) -> dict[str, str]:
    """A user with no AWS configured: no AWS_*/OPSMCP_* variables, an empty HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    # A fresh data dir per round, so each round starts its own sandbox; it stops with its server.
    env.update(HOME=home, OPSMCP_DATA_DIR=str(Path(home) / "data"), AWS_EC2_METADATA_DISABLED="true",
               OPSMCP_SANDBOX_IDLE_SECONDS="0")
    return env


def server_cpu_seconds() -> float:
    """CPU seconds (user + system, plus reaped children) of this process's child processes."""
    me, total = os.getpid(), 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


async def one_start(exe: str) -> tuple[float, float, int, float, float]:
    """Spawn ``exe serve``; return (s to tools/list, s to the first analyze_dlq answer, messages
    read, server CPU s at the answer, s a second (warm) analyze_dlq takes). The first answer
    minus a warm call is when the sandbox was ready for the first call."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as home, open(os.devnull, "w") as quiet:
        params = StdioServerParameters(command=exe, args=["serve"], env=clean_env(home))
        t0 = time.perf_counter()
        async with Client(stdio_client(params, errlog=quiet)) as client:
            await client.list_tools()
            listed = time.perf_counter() - t0
            res = await client.call_tool("analyze_dlq", {"queue": "order-queue-dlq"})
            answered = time.perf_counter() - t0
            cpu = server_cpu_seconds()
            if res.is_error:
                raise SystemExit(f"{exe}: analyze_dlq failed: {res.content}")
            read = int((res.structured_content or {}).get("messages_read", -1))
            t1 = time.perf_counter()
            await client.call_tool("analyze_dlq", {"queue": "order-queue-dlq"})
            warm = time.perf_counter() - t1
    return listed, answered, read, cpu, warm


def row(label: str, runs: list[tuple[float, float, int, float, float]]) -> str:
    """One table row: medians (ms) over ``runs`` of :func:`one_start`."""
    listed = [r[0] * 1000 for r in runs]
    answered = [r[1] * 1000 for r in runs]
    cpu = [r[3] * 1000 for r in runs]
    warm = [r[4] * 1000 for r in runs]
    ready = [(r[1] - r[4]) * 1000 for r in runs]
    return (f"{label:<10} {statistics.median(listed):9.0f} {statistics.median(answered):12.0f} "
            f"{min(answered):9.0f} {max(answered):9.0f} {statistics.median(cpu):9.0f} {runs[0][2]:9d} "
            f"{statistics.median(warm):9.0f} {statistics.median(ready):9.0f}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="starts per executable (default 5)")
    ap.add_argument("--baseline", help="another opsmcp executable to interleave with this one (e.g. main's)")
    opts = ap.parse_args()
    exes = {"this": OPSMCP}
    if opts.baseline:
        exes = {"baseline": opts.baseline, "this": OPSMCP}
    results: dict[str, list[tuple[float, float, int, float, float]]] = {k: [] for k in exes}
    await one_start(OPSMCP)  # warm the OS file cache (imports) once, not measured
    for _ in range(opts.rounds):
        for label, exe in exes.items():
            results[label].append(await one_start(exe))
    load = os.getloadavg()[0]
    print(f"sandbox start, {opts.rounds} rounds each, {os.cpu_count()} cores, load average {load:.2f}; ms")
    print(f"{'opsmcp':<10} {'tools/list':>9} {'analyze_dlq':>12} {'min':>9} {'max':>9} {'cpu':>9} {'dead lett':>9} "
          f"{'warm call':>9} {'ready':>9}")
    print("(ready = the first analyze_dlq answer minus a warm analyze_dlq: when the first call could start)")
    for label, runs in results.items():
        print(row(label, runs))
    if opts.baseline:
        base = statistics.median(r[1] for r in results["baseline"])
        this = statistics.median(r[1] for r in results["this"])
        print(f"first analyze_dlq answer: this/baseline = {this / base:.2f}x "
              f"({base * 1000:.0f} -> {this * 1000:.0f} ms)")


if __name__ == "__main__":
    anyio.run(main)
