"""RSS of `opsmcp serve --transport http` with thousands of idle /events listeners, and after
they leave (issue 19, item 11: no listener cap, and RSS stayed up after they closed).

    python scripts/probe_events_listeners.py [--listeners 4000] [--runs 3] [--baseline REV]

Each run starts a fresh server (toolsets queues, no token: every listener is the same
identity) against one seeded moto process, reads its RSS idle, opens N /events streams at
once (each waits for hello + snapshot or a refusal), reads RSS with them open, closes them
all, waits until the server holds no listener, and reads RSS again. Configurations:

- ``baseline``: the code at ``--baseline REV`` (git archive of that revision; the server
  child runs with it first on PYTHONPATH), when given;
- ``defaults``: this checkout with its default caps;
- ``caps raised``: this checkout with both caps at N + 1000, so every listener is accepted
  and only the hand-back of memory differs from the baseline.

Prints one table: per configuration the accepted / refused listeners and RSS idle, loaded
and after (min-max over the runs), the growth per accepted listener, and the RSS left
after closing as a ratio of the baseline's. RSS is psutil's (VmRSS). Loopback only; every
process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import OPSMCP, ROOT, HttpServer, free_port, machine, rss_mib, seeded_backend, table


async def hold(client: httpx.AsyncClient, url: str, outcomes: list[int], opened: asyncio.Event,
               done: asyncio.Event, target: int) -> None:
    """Open one /events stream; record 200 (after hello + snapshot) or the refusal status,
    and keep the stream open until ``done``.

    The line iterator stays referenced while the stream is held: an abandoned async
    generator is finalised at once, and closing it closes the connection (the server would
    see the listener leave)."""
    try:
        async with client.stream("GET", url) as response:
            lines = response.aiter_lines()
            if response.status_code == 200:
                seen = 0
                while seen < 2:
                    seen += (await anext(lines)).startswith("event:")
            outcomes.append(response.status_code)
            if len(outcomes) >= target:
                opened.set()
            if response.status_code == 200:
                await done.wait()
            await lines.aclose()
    except (httpx.HTTPError, StopAsyncIteration):
        outcomes.append(0)
        if len(outcomes) >= target:
            opened.set()


async def wait_until_quiet(server: HttpServer, seconds: float) -> None:
    """Wait until the server's RSS stops falling (listeners torn down, trim done)."""
    last, steady, deadline = rss_mib(server.pid), 0, time.monotonic() + 60
    while steady < seconds / 0.5 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_mib(server.pid)
        steady = steady + 1 if abs(now - last) < 0.5 else 0
        last = now


async def one_run(env: dict[str, str], n: int) -> dict[str, float]:
    port = free_port()
    server = HttpServer([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n + 10,
                                                                      max_keepalive_connections=0)) as client:
            deadline = time.monotonic() + 120
            while (await client.get(f"{base}/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "server not ready"
                await asyncio.sleep(0.2)
            # Warm up: one listener starts the depth poller (SQS client, first poll), then leaves.
            warm_outcomes: list[int] = []
            warm_open, warm_done = asyncio.Event(), asyncio.Event()
            warm = asyncio.create_task(hold(client, f"{base}/events", warm_outcomes, warm_open, warm_done, 1))
            await asyncio.wait_for(warm_open.wait(), 60)
            await asyncio.sleep(6)  # one poll interval
            warm_done.set()
            await warm
            await wait_until_quiet(server, 2)
            idle = rss_mib(server.pid)
            outcomes: list[int] = []
            opened, done = asyncio.Event(), asyncio.Event()
            tasks = [asyncio.create_task(hold(client, f"{base}/events", outcomes, opened, done, n)) for _ in range(n)]
            await asyncio.wait_for(opened.wait(), 600)
            await wait_until_quiet(server, 1)
            loaded = rss_mib(server.pid)
            done.set()
            await asyncio.gather(*tasks)
            await wait_until_quiet(server, 3)
            after = rss_mib(server.pid)
    finally:
        server.stop()
    return {"idle": idle, "loaded": loaded, "after": after, "accepted": outcomes.count(200),
            "refused": sum(1 for o in outcomes if o == 503), "failed": sum(1 for o in outcomes if o not in (200, 503))}


def span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def baseline_tree(rev: str) -> Path:
    """``git archive`` of ``rev`` unpacked into a temporary directory; returns its src/."""
    where = Path(tempfile.mkdtemp(prefix="opsmcp-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where / "src"


async def main(n: int, runs: int, baseline: str | None) -> None:
    backend = seeded_backend()
    raised = str(n + 1000)
    common = dict(backend.env, OPSMCP_TOOLSETS="queues", OPSMCP_EVENTS_POLL_SECONDS="5")
    configs: list[tuple[str, dict[str, str]]] = []
    if baseline:
        configs.append((f"baseline ({baseline})", dict(common, PYTHONPATH=str(baseline_tree(baseline)))))
    configs.append(("defaults", common))
    configs.append(("caps raised", dict(common, OPSMCP_EVENTS_MAX_LISTENERS=raised,
                                        OPSMCP_EVENTS_MAX_LISTENERS_PER_IDENTITY=raised)))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in configs}
    loads = [os.getloadavg()[0]]
    try:
        for _ in range(runs):  # interleaved, so drift in machine load hits every configuration alike
            for name, env in configs:
                results[name].append(await one_run(env, n))
                loads.append(os.getloadavg()[0])
    finally:
        backend.stop()
    base_left = None
    rows = []
    for name, rs in results.items():
        left = [r["after"] - r["idle"] for r in rs]
        if base_left is None:
            base_left = sum(left) / len(left)
        per = [(r["loaded"] - r["idle"]) * 1024 / r["accepted"] for r in rs if r["accepted"]]
        ratio = (sum(left) / len(left)) / base_left if base_left else float("nan")
        rows.append([name, span([r["accepted"] for r in rs]), span([r["refused"] for r in rs]),
                     span([r["failed"] for r in rs]), span([r["idle"] for r in rs]), span([r["loaded"] for r in rs]),
                     span([r["loaded"] - r["idle"] for r in rs]), span(per) if per else "-",
                     span([r["after"] for r in rs]), span(left), f"{ratio:.2f}"])
    print(f"{n} idle /events listeners at once; {runs} runs per configuration (min-max); {machine()}")
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
    print(table(["configuration", "accepted", "503", "other", "RSS idle MiB", "RSS loaded MiB", "growth MiB",
                 "KiB / listener", "RSS after MiB", "left after MiB", "left / first row"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=4000, help="idle /events connections to open at once")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--baseline", help="git revision to measure as the baseline (e.g. 4f005dd)")
    args = parser.parse_args()
    asyncio.run(main(args.listeners, args.runs, args.baseline))
