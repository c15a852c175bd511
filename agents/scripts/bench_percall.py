"""Benchmark what one tool call costs through langchain-mcp-adapters over stdio.

Two ways a LangChain program reaches opsmcp (``opsmcp serve`` on its embedded sandbox):

* ``default``: ``MultiServerMCPClient(...).get_tools()``, the adapter's documented default.
  Every tool call starts a new ``opsmcp serve`` process and a new MCP session, so each call
  pays for the process start (and, before the shared sandbox, for a new sandbox).
* ``session``: one ``client.session(...)`` kept open and ``load_mcp_tools(session)``: every
  call goes through the one process (the baseline; what ``opsmcp-agent`` does).

Each round uses a fresh data directory (so the first use starts a sandbox), loads the tools,
then makes ``--calls`` calls of ``list_queues`` and times each. The table gives the median
per call (excluding the first call of a round, which may wait for the sandbox) with the
min-max over rounds, and the ratio against ``session`` measured in the same run; the load
average is printed before and after.

With ``--baseline CMD`` the ``default`` path is also measured against another server
command (e.g. an older checkout), alternating rounds with this one.

Run it in the agent's venv (``agents/scripts/setup.sh`` with ``OPSMCP_AGENT_SKIP_LLM=1``):

    .venv-agent/bin/python agents/scripts/bench_percall.py --rounds 3 --calls 4 \\
        [--server '.venv/bin/opsmcp serve'] [--baseline '/tmp/old/opsmcp serve']
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env(data_dir: str, extra: dict[str, str]) -> dict[str, str]:
    """A user with no AWS configured (no AWS_*/OPSMCP_* variables), data under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(HOME=data_dir, OPSMCP_DATA_DIR=str(Path(data_dir) / "data"), AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


async def one_round(command: str, mode: str, calls: int, extra: dict[str, str]) -> list[float]:
    """Seconds of each of ``calls`` list_queues calls in ``mode`` (default / session)."""
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    argv = shlex.split(command)
    with tempfile.TemporaryDirectory(prefix="opsmcp-percall-") as home:
        conn = {"transport": "stdio", "command": argv[0], "args": argv[1:], "env": clean_env(home, extra)}
        client = MultiServerMCPClient({"opsmcp": conn})  # type: ignore[dict-item]
        times: list[float] = []
        if mode == "default":
            tools = {t.name: t for t in await client.get_tools()}
            for _ in range(calls):
                started = time.perf_counter()
                await tools["list_queues"].ainvoke({})
                times.append(time.perf_counter() - started)
        else:
            async with client.session("opsmcp") as session:
                tools = {t.name: t for t in await load_mcp_tools(session)}
                for _ in range(calls):
                    started = time.perf_counter()
                    await tools["list_queues"].ainvoke({})
                    times.append(time.perf_counter() - started)
        if mode == "default":
            await stop_sandbox(argv, clean_env(home, extra))
        return times


async def stop_sandbox(argv: list[str], env: dict[str, str]) -> None:
    """Stop the round's shared sandbox (``opsmcp sandbox stop``), if this opsmcp has one."""
    exe = argv[0] if "serve" not in argv else " ".join(argv[: argv.index("serve")])
    proc = await asyncio.create_subprocess_exec(*shlex.split(exe), "sandbox", "stop", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", default=f"{ROOT / '.venv' / 'bin' / 'opsmcp'} serve",
                        help="command that starts opsmcp over stdio (default: the repository's .venv)")
    parser.add_argument("--baseline", help="another server command to measure the default path against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4, help="list_queues calls per round (>= 2)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the servers (repeatable)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    runs = [("session", args.server), ("default", args.server)]
    if args.baseline:
        runs.append(("default", args.baseline))
    print(f"load average before: {load()}", file=sys.stderr)
    per: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    first: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for n in range(args.rounds):
        for run in runs:  # alternate, so every path sees the same machine load
            times = asyncio.run(one_round(run[1], run[0], args.calls, extra))
            first[run].append(times[0])
            per[run].append(statistics.median(times[1:]))
            print(f"round {n + 1} {run[0]:<8} {run[1]}: " + " ".join(f"{t:.3f}" for t in times), file=sys.stderr)
    base = statistics.median(per[runs[0]])
    print(f"\nper-call seconds of list_queues through langchain-mcp-adapters over stdio "
          f"({args.rounds} rounds x {args.calls} calls; median of calls 2..n per round, min-max over rounds)")
    print(f"{'path':<9} {'server':<48} {'first call':>12} {'per call':>9} {'min-max':>15} {'x session':>10}")
    for run in runs:
        values = per[run]
        print(f"{run[0]:<9} {run[1][-48:]:<48} {statistics.median(first[run]):>11.3f}s "
              f"{statistics.median(values):>8.3f}s {min(values):>7.3f}-{max(values):<7.3f} "
              f"{statistics.median(values) / base:>9.1f}x")
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
