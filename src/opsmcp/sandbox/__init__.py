"""The embedded sandbox: a moto server seeded with the incident scenario.

``opsmcp serve`` with no AWS configured uses the data directory's shared sandbox
(:mod:`.shared`: one moto process, :mod:`.process`, for every server of that data
directory), so ``opsmcp serve`` works on a fresh machine with no AWS account and clients
that start a server per call meet the same state every time. :func:`start_sandbox` is the
in-process variant (tests, benchmarks): it starts moto on a free loopback port and resolves
the sandbox's settings (endpoint, credentials, log store) before any client is built;
:meth:`Sandbox.seed` then writes the incident into it. :func:`start_moto` is the bare
server, shared with the tests and benchmarks.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp.sandbox")

MISSING_EXTRA = (
    "the embedded sandbox needs moto, which is not installed: pip install 'opsmcp[sandbox]' "
    "(or configure AWS: AWS_ENDPOINT_URL / AWS_PROFILE / AWS credentials)"
)
#: The seed settings a server takes from the sandbox it uses (it must read what was seeded).
ADOPTED = ("aws_region", "orders_table", "orders_status_index", "orders_customer_index")
#: moto's default account: any access key that is not AKIA... maps to it.
SANDBOX_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox"}


def moto_installed() -> bool:
    """True when moto (the ``sandbox`` extra) can be imported, without importing it."""
    import importlib.util

    return importlib.util.find_spec("moto") is not None


@dataclass
class Sandbox:
    """A running sandbox: its endpoint, what was seeded, and how long seeding took (s)."""

    endpoint: str
    server: Any
    settings: Settings
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    queues: list[str] = field(default_factory=list)  # every seeded queue name, sources then DLQs
    _log_seeding: Any = None  # the child process writing the log store, while it runs

    def seed(self) -> dict[str, int]:
        """Seed the incident scenario into the running moto server and the sandbox log store.

        SQS, DynamoDB and CloudWatch are written through moto's in-process backends
        (:mod:`.inprocess`); meanwhile a child process (:mod:`.logseed`) writes the log
        lines straight into the SQLite store at ``settings.log_store_path`` (recreated: the
        story's times are relative to now).
        Returns the counts for the banner and sets ``seconds`` (since :func:`start_sandbox`).

        Raises:
            Exception: whatever moto or seeding raised.
        """
        from opsmcp.sandbox import logseed
        from opsmcp.sandbox.inprocess import InProcessClients
        from opsmcp.sandbox.scenario import build_scenario
        from opsmcp.sandbox.seed import seed_aws

        scenario = build_scenario()
        if "logs" in self.settings.toolsets:  # on the other core, while moto is seeded here
            self._log_seeding = logseed.start(self.settings.log_store_path, scenario.now)
        counts = seed_aws(self.settings, scenario, clients=InProcessClients(self.settings))
        if self._log_seeding is not None:
            counts["log_lines"] = self._log_seeding.wait()
        self.counts = counts
        self.queues = [q.name for q in scenario.queues] + [q.dlq for q in scenario.queues if q.dlq]
        self.seconds = time.perf_counter() - self.started
        return counts

    def stop(self) -> None:
        """Stop the moto server (and the log store's seeding, if it still runs)."""
        if self._log_seeding is not None:
            self._log_seeding.kill()
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


def sandbox_log_store(data_dir: Path) -> Path:
    """The sandbox's log store in ``data_dir``: ``sandbox-logs.db``.

    It is separate from ``logs.db`` (the store of a configured deployment) because every
    sandbox start recreates it with the story's lines. ``opsmcp logs load`` writes here
    when the sandbox is the active backend (no AWS configured, or ``--sandbox``).
    """
    return data_dir / "sandbox-logs.db"


def start_sandbox(settings: Settings) -> Sandbox:
    """Start moto in this process on a free loopback port; return the :class:`Sandbox` (not seeded).

    The in-process variant the tests and benchmarks use (``opsmcp serve`` shares one sandbox
    process per data directory instead: :mod:`.shared`). Resolves everything the server's
    clients need before they exist: the endpoint, the sandbox settings (endpoint, no
    profile, the sandbox log store) in ``sandbox.settings``, and sets fake credentials in
    this process's environment (never real ones). Seed it with :meth:`Sandbox.seed`.
    ``settings`` is only read.

    Raises:
        OpsError: moto (the ``sandbox`` extra) is not installed.
    """
    from opsmcp.errors import OpsError

    if not moto_installed():
        raise OpsError(MISSING_EXTRA)
    started = time.perf_counter()
    server, endpoint = start_moto()
    target = sandbox_target(settings, endpoint, {})
    return Sandbox(endpoint=endpoint, server=server, settings=target, started=started)


def sandbox_target(settings: Settings, endpoint: str, seed: dict[str, Any]) -> Settings:
    """``settings`` pointed at the sandbox at ``endpoint``.

    Sets the sandbox's dummy credentials in this process's environment (and drops any
    profile or session token: never real ones). The sandbox's seed settings (region, table
    and index names, as ``seed``: :data:`ADOPTED`) win over this server's, which must read
    what was seeded.
    """
    import os

    os.environ.update(SANDBOX_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    update: dict[str, Any] = {k: v for k, v in seed.items() if k in ADOPTED}
    update.update(aws_endpoint_url=endpoint, aws_profile=None, sandbox=True,
                  log_store=sandbox_log_store(settings.data_dir))
    if settings.log_backend == "cloudwatch" and not settings.cloudwatch_log_groups:
        from opsmcp.sandbox.seed import SANDBOX_LOG_GROUP_PREFIX

        update["cloudwatch_log_groups"] = [SANDBOX_LOG_GROUP_PREFIX + "*"]  # what the sandbox seeds
    return settings.model_copy(update=update)


def banner(sandbox: Any) -> str:
    """The human summary printed to stderr once the sandbox is seeded (a :class:`Sandbox` or a
    :class:`~opsmcp.sandbox.shared.SharedSandbox`: its endpoint, counts, queues, seconds)."""
    c = sandbox.counts
    if getattr(sandbox, "started_here", True):
        where = f"moto at {sandbox.endpoint} ready {sandbox.seconds:.2f}s after start"
    else:
        where = f"joined the sandbox at {sandbox.endpoint} that another `opsmcp serve` on this data dir started"
    shared = ""
    if hasattr(sandbox, "started_here"):
        idle = sandbox.settings.sandbox_idle_seconds
        shared = (f" Every `opsmcp serve` on {sandbox.settings.data_dir} shares it (what one moves, all see); it "
                  f"stops {idle:g} s after the last one leaves (`opsmcp sandbox stop` stops it now).")
    return (
        f"opsmcp sandbox: {where} with an "
        f"order-processing incident: {c.get('queues', 0)} queues ({', '.join(sandbox.queues)}), "
        f"{c.get('dead_letters', 0)} dead letters, {c.get('orders', 0)} orders"
        + (f", {c['log_lines']} log lines" if "log_lines" in c else "")
        + (f", {c['metric_points']} metric points" if "metric_points" in c else "")
        + ". Try: list_queues, then analyze_dlq('order-queue-dlq')."
        + shared
    )


def eprint(text: str) -> None:
    """Print to stderr (stdout is the stdio MCP wire)."""
    print(text, file=sys.stderr, flush=True)
