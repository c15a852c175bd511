"""Memory of the /events feed: RSS of `opsmcp serve --transport http` (sandbox) idle, with N
idle /events subscribers connected, and after they leave.

    python scripts/bench_events.py [--subscribers 300]

Prints one table. RSS is read from /proc/<pid>/status (VmRSS). Loopback only; the server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

OPSMCP = str(Path(sys.executable).parent / "opsmcp")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hold(client: httpx.AsyncClient, url: str, ready: asyncio.Event, done: asyncio.Event,
               opened: list[int], target: int) -> None:
    """Open one /events stream, wait for hello + snapshot, then stay idle until ``done``."""
    async with client.stream("GET", url) as response:
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                seen += 1
            if seen >= 2:  # hello + snapshot: connected and registered
                break
        opened.append(1)
        if len(opened) >= target:
            ready.set()
        await done.wait()


async def main(n: int) -> None:
    port = free_port()
    data = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(OPSMCP_DATA_DIR=data, HOME=data, OPSMCP_EVENTS_POLL_SECONDS="5",
               OPSMCP_SANDBOX_IDLE_SECONDS="0")  # the sandbox stops with the server
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n + 10)) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = await client.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                          headers={"Accept": "application/json, text/event-stream",
                                                   "MCP-Protocol-Version": "2025-11-25"})
                    if r.status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # let start-up settle before the idle reading
            idle = rss_mb(proc.pid)
            ready, done, opened = asyncio.Event(), asyncio.Event(), []
            tasks = [asyncio.create_task(hold(client, f"{base}/events", ready, done, opened, n)) for _ in range(n)]
            await asyncio.wait_for(ready.wait(), 120)
            await asyncio.sleep(2)
            loaded = rss_mb(proc.pid)
            done.set()
            await asyncio.gather(*tasks)
            await asyncio.sleep(2)
            after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"| state | RSS MB |\n|---|---|\n| idle | {idle:.1f} |\n| {n} idle /events subscribers | {loaded:.1f} "
          f"(+{loaded - idle:.1f}, {(loaded - idle) * 1024 / n:.0f} KB each) |\n| after they left | {after:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=300, help="idle /events connections to open")
    asyncio.run(main(parser.parse_args().subscribers))
