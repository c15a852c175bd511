"""The embedded sandbox: an in-process moto server seeded with the incident scenario.

:func:`start_sandbox` starts moto on a free loopback port and resolves the sandbox's
settings (endpoint, credentials, log store) before any client is built;
:meth:`Sandbox.seed` then writes the incident into it (in the background under ``opsmcp
serve``), so ``opsmcp serve`` works on a fresh machine with no AWS account.
:func:`start_moto` is the bare server, shared with the tests and benchmarks.
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
    lock: Any = None  # the open lock file of the shared sandbox log store, if this process holds it
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
        """Stop the moto server; remove a per-process log store; release the store lock."""
        try:
            if self._log_seeding is not None:
                self._log_seeding.kill()
            self.server.stop()
        finally:
            if self.lock is None and "logs" in self.settings.toolsets:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.settings.log_store_path}{suffix}").unlink(missing_ok=True)
            if self.lock is not None:
                self.lock.close()


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


def _claim_log_store(data_dir: Path) -> tuple[Path, Any]:
    """The log store this sandbox may recreate, and the lock that makes it ours.

    The first sandbox server on a data dir takes an exclusive lock on
    ``sandbox-logs.db.lock`` for its lifetime and recreates ``sandbox-logs.db``. A second
    one on the same data dir (the lock is held) gets a store of its own,
    ``sandbox-logs-<pid>.db``, removed when it stops: neither replaces the other's store.
    Returns ``(path, open lock file or None)``.
    """
    import fcntl
    import os

    from opsmcp.private import open_private

    shared = sandbox_log_store(data_dir)
    # held open for the server's lifetime; 0600 in a 0700 data directory, like every data file
    lock = os.fdopen(open_private(Path(f"{shared}.lock"), os.O_RDWR | os.O_APPEND | os.O_CREAT), "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        own = data_dir / f"sandbox-logs-{os.getpid()}.db"
        log.warning("another opsmcp sandbox uses %s; this one keeps its logs in %s", shared, own)
        return own, None
    _remove_stale_stores(data_dir)
    return shared, lock


def _remove_stale_stores(data_dir: Path) -> None:
    """Delete per-process stores (``sandbox-logs-<pid>.db*``) whose process is gone (killed)."""
    import os

    for path in data_dir.glob("sandbox-logs-*.db*"):
        pid = path.name.removeprefix("sandbox-logs-").split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            continue


def start_sandbox(settings: Settings) -> Sandbox:
    """Start moto in-process on a free loopback port; return the :class:`Sandbox` (not seeded).

    Resolves everything the server's clients need before they exist: the endpoint, the
    sandbox settings (endpoint, no profile, the sandbox log store) in ``sandbox.settings``,
    and sets fake credentials in this process's environment (never real ones). Seed it with
    :meth:`Sandbox.seed` (in the background: ``tools/list`` need not wait). ``settings``
    is only read.

    Raises:
        OpsError: moto (the ``sandbox`` extra) is not installed.
    """
    from opsmcp.errors import OpsError

    if not moto_installed():
        raise OpsError(MISSING_EXTRA)
    started = time.perf_counter()
    server, endpoint = start_moto()
    target, lock = sandbox_settings(settings, endpoint)
    return Sandbox(endpoint=endpoint, server=server, settings=target, started=started, lock=lock)


def sandbox_settings(settings: Settings, endpoint: str) -> tuple[Settings, Any]:
    """The sandbox's settings for moto at ``endpoint``, and the lock of its log store.

    Sets the sandbox's dummy credentials in this process's environment (and drops any
    profile or session token: never real ones), claims the log store
    (:func:`_claim_log_store`, with the logs toolset) and returns ``(settings with the
    endpoint, no profile, sandbox on and that store; the open lock file or None)``.
    """
    import os

    os.environ.update(SANDBOX_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    store, lock = (settings.log_store_path, None)
    if "logs" in settings.toolsets:
        store, lock = _claim_log_store(settings.data_dir)
    target = settings.model_copy(update={"aws_endpoint_url": endpoint, "aws_profile": None, "sandbox": True,
                                         "log_store": store})
    return target, lock


def banner(sandbox: Sandbox) -> str:
    """The human summary printed to stderr once the sandbox is seeded."""
    c = sandbox.counts
    return (
        f"opsmcp sandbox: moto at {sandbox.endpoint} ready {sandbox.seconds:.2f}s after start with an "
        f"order-processing incident: {c.get('queues', 0)} queues ({', '.join(sandbox.queues)}), "
        f"{c.get('dead_letters', 0)} dead letters, {c.get('orders', 0)} orders"
        + (f", {c['log_lines']} log lines" if "log_lines" in c else "")
        + (f", {c['metric_points']} metric points" if "metric_points" in c else "")
        + ". Try: list_queues, then analyze_dlq('order-queue-dlq')."
    )


def eprint(text: str) -> None:
    """Print to stderr (stdout is the stdio MCP wire)."""
    print(text, file=sys.stderr, flush=True)
