"""Shared plumbing of the benchmark scripts (scripts/bench_*.py): a seeded moto server in its
own process, opsmcp and the bare SDK server as child processes, RSS, percentiles, tables.

moto runs in its own process (``tests/moto_process.py``, the one implementation the
drills use too), so neither the driver's nor opsmcp's RSS or GIL includes it.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OPSMCP = str(BIN / "opsmcp")
BARE = [sys.executable, str(ROOT / "scripts" / "bare_server.py")]
sys.path.insert(0, str(ROOT / "tests"))  # moto_process: shared with the drills

os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                  AWS_EC2_METADATA_DISABLED="true")


@dataclass
class Backend:
    """A seeded moto server (own process) and what the benchmarks call on it."""

    moto: Any
    endpoint: str
    data_dir: Path
    order_id: str
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the moto process."""
        self.moto.stop()


def seeded_backend(orders: int = 240) -> Backend:
    """Start moto in its own process and seed the sandbox scenario's queues and orders."""
    from moto_process import MotoProcess

    from opsmcp.config import Settings
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    moto = MotoProcess().start()
    data = Path(tempfile.mkdtemp(prefix="opsmcp-bench-"))
    scenario = build_scenario(orders=orders)
    seed_aws(Settings(aws_endpoint_url=moto.endpoint, data_dir=data), scenario, metrics=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
    env.update(AWS_ENDPOINT_URL=moto.endpoint, OPSMCP_DATA_DIR=str(data))
    return Backend(moto=moto, endpoint=moto.endpoint, data_dir=data, order_id=scenario.orders[3]["orderId"], env=env)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """A child process serving streamable HTTP at ``url`` (``/mcp``); stopped by :meth:`stop`."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not listen on {port} within 60 s") from None
                time.sleep(0.05)  # readiness poll with a deadline

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def opsmcp_http(backend: Backend, *flags: str, toolsets: str = "queues,orders", command: str = OPSMCP) -> HttpServer:
    """``opsmcp serve --transport http`` (``command``: another opsmcp executable) on a free
    port against ``backend``."""
    port = free_port()
    env = dict(backend.env, OPSMCP_TOOLSETS=toolsets)
    return HttpServer([command, "serve", "--transport", "http", "--port", str(port), *flags], env, port)


def bare_http(backend: Backend) -> HttpServer:
    """The bare SDK server (scripts/bare_server.py) over streamable HTTP on a free port."""
    port = free_port()
    return HttpServer([*BARE, "--transport", "http", "--port", str(port)], backend.env, port)


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB."""
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``xs`` (``statistics.quantiles``, inclusive method)."""
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    if q == 0.5:
        return statistics.median(xs)
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table (Markdown pipes, so it pastes into the docs)."""
    cells = [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def machine() -> str:
    """One line naming the machine: cores, memory, load, Python, date (UTC)."""
    import platform

    import psutil

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load {load}; Python {platform.python_version()}")
