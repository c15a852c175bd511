"""Run the embedded sandbox's moto server, and seed it, in a child process.

``opsmcp serve`` on the sandbox has three CPU-bound jobs before the first tool call can be
answered: importing the MCP SDK and building the server, importing moto and seeding it
(queues, orders, metrics), and writing the log store. In one process the first two share
the GIL, so they run one after the other however many cores there are. Here moto lives in
its own process (and the log store in a third, :mod:`.logseed`), so on 2 cores the server
is built while moto starts and is seeded.

:func:`spawn` starts the child at once and returns a :class:`Launch`; the caller imports
and builds what it needs meanwhile, then :meth:`Launch.attach` waits for the child's
endpoint and returns a :class:`ProcessSandbox` (a :class:`~opsmcp.sandbox.Sandbox` whose
:meth:`~ProcessSandbox.seed` waits for the child's seeding instead of doing it).

The child (``python -m opsmcp.sandbox.process OPTIONS_JSON``) writes JSON lines on stdout:
``{"endpoint": URL}`` once moto listens, then ``{"counts": {...}, "queues": [...]}`` or
``{"error": "..."}`` once seeding ended. It serves until its stdin closes (the server
exited, or was killed), then stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opsmcp.sandbox import Sandbox  # the package: imported anyway by ``-m opsmcp.sandbox.process``

if TYPE_CHECKING:
    from opsmcp.config import Settings

@dataclass
class SeedSettings:
    """What seeding reads of :class:`~opsmcp.config.Settings`, passed to the child as JSON:
    the child then never imports pydantic or pydantic-settings (a few hundred ms of CPU on
    the sandbox's critical path)."""

    aws_endpoint_url: str
    aws_region: str
    orders_table: str
    orders_status_index: str
    orders_customer_index: str
    audit_table: str | None
    backend_timeout_seconds: float
    aws_profile: str | None = None
    log_backend: str = "embedded"  # "cloudwatch": the log lines go into moto's CloudWatch Logs too


#: The settings the server passes to the child: every :class:`SeedSettings` field but the
#: endpoint (the child's own moto) and the profile (the sandbox uses dummy credentials).
SEED_FIELDS = tuple(f.name for f in fields(SeedSettings) if f.name not in ("aws_endpoint_url", "aws_profile"))


class _Child:
    """The moto child process as the :class:`~opsmcp.sandbox.Sandbox` ``server``: ``stop()`` ends it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> None:
        """Close the child's stdin (it stops its moto server and exits); kill it if it lingers."""
        if self.proc.poll() is not None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=0.5)  # a child still seeding reads stdin only afterwards: killed
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def read(self, what: str) -> dict[str, Any]:
        """The child's next JSON line. Raises RuntimeError (saying ``what`` was awaited) if it
        ended without one."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the sandbox's moto process exited (code {code}) before {what}; "
                               "its stderr above says why")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the sandbox's moto process failed: {message['error']}")
        return message


@dataclass
class Launch:
    """A started moto child, not yet attached: see :meth:`attach`."""

    child: _Child
    settings: Settings  # the sandbox's settings without the endpoint (not known yet)
    started: float
    lock: Any = None
    log_seeding: Any = None

    def attach(self) -> ProcessSandbox:
        """Wait for the child's endpoint; return the :class:`ProcessSandbox` (seeding goes on).

        Raises:
            OpsError: the child exited before listening (moto failed to start).
        """
        from opsmcp.errors import OpsError

        try:
            endpoint = str(self.child.read("listening")["endpoint"])
        except Exception as exc:
            self.child.stop()
            if self.log_seeding is not None:
                self.log_seeding.kill()
            if self.lock is not None:
                self.lock.close()
            raise OpsError(f"the embedded sandbox failed to start: {exc}",
                           "see the lines above; or configure AWS (AWS_ENDPOINT_URL / AWS_PROFILE).") from exc
        target = self.settings.model_copy(update={"aws_endpoint_url": endpoint})
        return ProcessSandbox(endpoint=endpoint, server=self.child, settings=target, started=self.started,
                              lock=self.lock, _log_seeding=self.log_seeding)


class ProcessSandbox(Sandbox):
    """A :class:`~opsmcp.sandbox.Sandbox` whose moto server runs, and is seeded, in the child."""

    def seed(self) -> dict[str, int]:
        """Wait until the child has seeded moto and the log child has written the store;
        return the counts (the banner's) and set ``queues`` and ``seconds``.

        Raises:
            RuntimeError: either child failed (the message says which and why).
        """
        message = self.server.read("seeding ended")
        counts = {str(k): int(v) for k, v in message["counts"].items()}
        if self._log_seeding is not None:
            counts["log_lines"] = self._log_seeding.wait()
        self.counts = counts
        self.queues = [str(q) for q in message["queues"]]
        self.seconds = time.perf_counter() - self.started
        return counts


def spawn(settings: Settings, avoid_port: int | None = None) -> Launch:
    """Start the moto child (and, with the logs toolset, the log store's child) for ``settings``.

    ``avoid_port``: the port the server itself is about to listen on (HTTP transport). moto
    asks the kernel for a free port before the server binds its own, so without this it can
    be handed that very port (seen when the server's port is itself an ephemeral one).

    Claims the sandbox's log store (:func:`~opsmcp.sandbox.sandbox_settings`: also sets the
    sandbox's dummy credentials in this process's environment) and returns at once; the
    scenario's "now" is fixed here, so both children tell the same story at the same times.

    Raises:
        OpsError: moto (the ``sandbox`` extra) is not installed.
    """
    from opsmcp.errors import OpsError
    from opsmcp.sandbox import MISSING_EXTRA, moto_installed, sandbox_settings

    if not moto_installed():
        raise OpsError(MISSING_EXTRA)
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    options = {"now": now.isoformat(), "settings": {k: getattr(settings, k) for k in SEED_FIELDS},
               "avoid_port": avoid_port}
    proc = subprocess.Popen([sys.executable, "-m", "opsmcp.sandbox.process", json.dumps(options)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    target, lock = sandbox_settings(settings, "")
    log_seeding = None
    if "logs" in settings.toolsets:
        from opsmcp.sandbox import logseed

        log_seeding = logseed.start(target.log_store_path, now)
    return Launch(child=_Child(proc), settings=target, started=started, lock=lock, log_seeding=log_seeding)


def main(argv: list[str]) -> int:
    """The child: start moto, say where, seed the scenario in-process, say what, serve until
    stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer  # first: the endpoint is what the parent waits for

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    options = json.loads(argv[0])
    server = listen(lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False),
                    options.get("avoid_port"))
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    if not _say({"endpoint": endpoint}):
        return 0
    try:
        from opsmcp.sandbox import SANDBOX_CREDENTIALS
        from opsmcp.sandbox.inprocess import InProcessClients
        from opsmcp.sandbox.scenario import build_scenario
        from opsmcp.sandbox.seed import seed_aws

        os.environ.update(SANDBOX_CREDENTIALS)
        settings: Any = SeedSettings(aws_endpoint_url=endpoint, **options["settings"])  # duck-typed Settings
        scenario = build_scenario(datetime.fromisoformat(options["now"]))
        counts = seed_aws(settings, scenario, clients=InProcessClients(settings))
        queues = [q.name for q in scenario.queues] + [q.dlq for q in scenario.queues if q.dlq]
        said = _say({"counts": counts, "queues": queues})
    except Exception as exc:  # reported to the parent, which names it in tool errors
        said = _say({"error": f"{type(exc).__name__}: {exc}"})
    if said:
        sys.stdin.read()  # until the server closes the pipe: it exited or was killed
    server.stop()
    return 0


def listen(make: Callable[[], Any], avoid_port: int | None) -> Any:
    """Start the server ``make()`` builds (a moto ``ThreadedMotoServer`` on port 0) and return
    it, started. If the kernel gave it ``avoid_port`` (the opsmcp server's own HTTP port, not
    yet bound), start a second one while the first still holds that port, and stop the first."""
    server = make()
    server.start()
    if avoid_port is not None and server.get_host_and_port()[1] == avoid_port:
        other = make()
        other.start()
        server.stop()
        server = other
    return server


def _say(message: dict[str, Any]) -> bool:
    """Write one JSON line to the parent; False when the parent is gone (closed pipe)."""
    try:
        print(json.dumps(message), flush=True)
    except (BrokenPipeError, OSError):
        sys.stdout = None  # nothing left to flush at exit (the pipe is closed)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
