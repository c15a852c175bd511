"""Cold start: spawn the server over stdio until the first ``tools/list`` answer.

opsmcp (``opsmcp serve``, an AWS endpoint configured, so no sandbox) and the bare SDK server
(scripts/bare_server.py, one trivial tool) are started alternately, ``--runs`` times each, in
the same run; the table gives medians, the spread and the ratio. ``--importtime`` adds what
``opsmcp serve`` imports that the bare server does not (``python -X importtime``), by package.
``--baseline /path/to/other/opsmcp`` (e.g. main's venv) adds that executable to every round,
so before and after are measured in the same run, interleaved.

Usage: python scripts/bench_coldstart.py [--runs 10] [--importtime] [--toolsets queues,orders,...]
       [--baseline /tmp/start-base/.venv/bin/opsmcp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import anyio
from benchlib import BARE, OPSMCP, machine, pct, seeded_backend, table


async def time_to_tools_list(command: str, args: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``command`` to the answer of the first ``tools/list``."""
    from mcp import Client, StdioServerParameters

    t0 = time.perf_counter()
    async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
        await client.list_tools()
        return time.perf_counter() - t0


def _imports(argv: list[str], env: dict[str, str]) -> dict[str, int]:
    """Self import time (us) of every module ``argv`` imports until stdin (closed) ends it."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    out: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            self_us, _cumulative_us, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
            out[name] = int(self_us)
    return out


def import_profile(env: dict[str, str], top: int = 12) -> list[tuple[float, str, int]]:
    """What ``opsmcp serve`` imports that the bare SDK server does not: self import time (ms)
    summed by top-level package, slowest first, with the number of modules."""
    bare = _imports(BARE[1:], env)
    ops = _imports(["-m", "opsmcp.cli", "serve"], env)
    by_package: dict[str, tuple[float, int]] = {}
    for name, us in ops.items():
        if name in bare:
            continue
        package = name.split(".")[0] if not name.startswith("opsmcp.") else ".".join(name.split(".")[:2])
        ms, n = by_package.get(package, (0.0, 0))
        by_package[package] = (ms + us / 1000, n + 1)
    rows = sorted(((ms, package, n) for package, (ms, n) in by_package.items()), reverse=True)
    return rows[:top]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--toolsets", default="", help="OPSMCP_TOOLSETS for opsmcp (default: all)")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--baseline", help="another opsmcp executable to interleave (e.g. main's venv's)")
    opts = parser.parse_args()

    backend = seeded_backend()
    env = dict(backend.env)
    if opts.toolsets:
        env["OPSMCP_TOOLSETS"] = opts.toolsets
    try:
        servers = [("ops", OPSMCP, ["serve"]), ("bare", BARE[0], BARE[1:])]
        if opts.baseline:
            servers.append(("baseline", opts.baseline, ["serve"]))
        for _ in range(2):  # warm the page cache for every server
            for _label, command, args in servers:
                await time_to_tools_list(command, args, env)
        times: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        for i in range(opts.runs):  # interleaved, rotating which goes first
            shift = i % len(servers)
            for label, command, args in servers[shift:] + servers[:shift]:
                times[label].append(await time_to_tools_list(command, args, env))
        bare = times["bare"]
        print(f"== stdio cold start to the first tools/list answer ({opts.runs} runs each, interleaved) ==")
        print(machine())
        names = {"ops": "opsmcp serve (AWS endpoint set)", "bare": "bare SDK MCPServer",
                 "baseline": f"baseline {opts.baseline}"}
        print(table(["server", "median ms", "min ms", "p90 ms"], [
            [names[label], statistics.median(t) * 1000, min(t) * 1000, pct(t, .9) * 1000]
            for label, t in times.items()]))
        for label, what, target in (("ops", "opsmcp", " (target <= 1.10x)"), ("baseline", "baseline", "")):
            if label in times:
                t = times[label]
                ratios = [o / b for o, b in zip(t, bare, strict=True)]
                print(f"ratio {what} / bare: median of medians {statistics.median(t) / statistics.median(bare):.2f}x; "
                      f"median of per-round ratios {statistics.median(ratios):.2f}x{target}")
        if opts.importtime:
            rows = import_profile(env)
            print("\n== what opsmcp serve imports beyond the bare SDK server (python -X importtime, self ms, "
                  "one run) ==")
            print(table(["self ms", "package", "modules"], [[ms, name, n] for ms, name, n in rows]))
            print(f"total of these: {sum(r[0] for r in rows):.0f} ms")
    finally:
        backend.stop()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    anyio.run(main)
