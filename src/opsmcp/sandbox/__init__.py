"""The embedded sandbox: an in-process moto server seeded with the incident scenario.

:func:`start_sandbox` starts moto on a free loopback port and seeds every data source, so
``opsmcp serve`` works on a fresh machine with no AWS account; :func:`start_moto` is the
bare server, shared with the tests and benchmarks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsmcp.config import Settings
from opsmcp.sandbox.scenario import Scenario



@dataclass
class Sandbox:
    """A running sandbox: its endpoint, what was seeded, and how long start-up took (s)."""

    endpoint: str
    server: Any
    counts: dict[str, int]
    seconds: float

    def stop(self) -> None:
        """Stop the moto server."""
        self.server.stop()


def start_moto() -> tuple[Any, str]:
    """Start an in-process moto server on a free 127.0.0.1 port; return ``(server, URL)``.

    Its per-request access log (werkzeug, INFO) is silenced. Stop it with ``server.stop()``.
    moto keeps one state for every server in a process (reset: POST ``<URL>/moto-api/reset``).
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def start_sandbox(settings: Settings) -> Sandbox:
    """Start moto in-process on a free loopback port and seed the incident scenario:
    SQS, DynamoDB and CloudWatch in moto, and the scenario's log lines into the log store
    at ``settings.log_store_path`` (recreated: the story's times are relative to now).

    Sets fake credentials in this process's environment (never real ones). Returns the
    running :class:`Sandbox`; ``settings`` is only read.

    Raises:
        Exception: whatever moto or seeding raised (the moto server is stopped first).
    """
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    t0 = time.perf_counter()
    server, endpoint = start_moto()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "sandbox"
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    target = settings.model_copy(update={"aws_endpoint_url": endpoint, "aws_profile": None})
    try:
        scenario = build_scenario()
        counts = seed_aws(target, scenario)
        if "logs" in settings.toolsets:
            counts["log_lines"] = seed_logs(settings.log_store_path, scenario)
    except Exception:
        server.stop()
        raise
    return Sandbox(endpoint=endpoint, server=server, counts=counts, seconds=time.perf_counter() - t0)


def seed_logs(path: Path, scenario: Scenario) -> int:
    """Recreate the log store at ``path`` holding the scenario's log lines; return their count."""
    from opsmcp.backends.logstore import LogStore

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = LogStore(path)
    try:
        report = store.ingest((line.to_json() for line in scenario.log_lines()), source="sandbox")
    finally:
        store.close()
    return report.loaded


def banner(sandbox: Sandbox) -> str:
    """The human summary printed to stderr at start-up."""
    c = sandbox.counts
    return (
        f"opsmcp sandbox: moto at {sandbox.endpoint} seeded in {sandbox.seconds:.2f}s with an order-processing incident: "
        f"{c.get('queues', 0)} queues (order-queue, payment-queue.fifo, order-cancellation-queue and their DLQs), "
        f"{c.get('dead_letters', 0)} dead letters, {c.get('orders', 0)} orders"
        + (f", {c['log_lines']} log lines" if "log_lines" in c else "")
        + (f", {c['metric_points']} metric points" if "metric_points" in c else "")
        + ". Try: list_queues, then analyze_dlq('order-queue-dlq')."
    )


def eprint(text: str) -> None:
    """Print to stderr (stdout is the stdio MCP wire)."""
    print(text, file=sys.stderr, flush=True)
