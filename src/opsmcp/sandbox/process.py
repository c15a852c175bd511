"""The shared sandbox's process: moto, seeded with the incident, for every ``opsmcp serve``
of one data directory (:mod:`.shared` starts it and finds it again).

``opsmcp serve`` on the sandbox has three CPU-bound jobs before the first tool call can be
answered: importing the MCP SDK and building the server, importing moto and seeding it
(queues, orders, metrics), and writing the log store. In one process the first two share
the GIL, so they run one after the other however many cores there are. Here moto lives in
its own process (and the log store is written by a third, :mod:`.logseed`, started first),
so on 2 cores the server is built while moto starts and is seeded.

Run as ``python -m opsmcp.sandbox.process OPTIONS_JSON`` (``data_dir``, ``port`` or null,
``idle_seconds``, and the :class:`SeedSettings` as ``settings``), in its own session. It
reports through ``<data dir>/sandbox/state.json`` (``starting``, ``listening`` with the
endpoint, then ``ready`` with what was seeded, or ``error``), serves until no server has
used it for ``idle_seconds`` (or SIGTERM: ``opsmcp sandbox stop``), then removes its state
file and exits. It also exits when its state file is gone or names another process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: How often the sandbox checks whether any server still uses it, seconds.
IDLE_POLL_SECONDS = 0.25


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


#: The settings a server passes to the sandbox: every :class:`SeedSettings` field but the
#: endpoint (the sandbox's own moto) and the profile (the sandbox uses dummy credentials).
SEED_FIELDS = tuple(f.name for f in fields(SeedSettings) if f.name not in ("aws_endpoint_url", "aws_profile"))


def main(argv: list[str]) -> int:
    """The sandbox: start the log store's seeding, start moto, say where, seed it, say what,
    serve until idle (see the module docstring). Returns the exit code."""
    from opsmcp.sandbox.files import SandboxFiles, process_start_time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its own session; only `opsmcp sandbox stop` ends it early
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    options = json.loads(argv[0])
    files = SandboxFiles(Path(options["data_dir"]))
    me = {"pid": os.getpid(), "created": process_start_time(os.getpid()), "seed": options["settings"],
          "started_at": time.time(), "idle_seconds": options["idle_seconds"], "data_dir": options["data_dir"]}
    say = _reporter(files, me)
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    from opsmcp.sandbox import logseed, sandbox_log_store

    log_seeding = logseed.start(sandbox_log_store(files.data_dir), now)  # on the other core, while moto starts
    say(state="starting")
    try:
        server, endpoint = _listen(options.get("port"))
    except OSError as exc:
        log_seeding.kill()
        port = options.get("port")
        say(state="error", error=f"127.0.0.1:{port} is already in use" if port and exc.errno == 98
            else f"moto could not listen: {exc}")
        return 1
    say(state="listening", endpoint=endpoint)
    try:
        counts, queues = _seed(endpoint, options["settings"], now)
        counts["log_lines"] = log_seeding.wait()
    except Exception as exc:  # reported to the servers, which name it in tool errors
        log_seeding.kill()
        say(state="error", endpoint=endpoint, error=f"{type(exc).__name__}: {exc}")
        server.shutdown()
        return 1
    say(state="ready", endpoint=endpoint, counts=counts, queues=queues, seconds=time.perf_counter() - started)
    serve_until_idle(files, me["pid"], float(options["idle_seconds"]), stopping, server.shutdown)
    return 0


def serve_until_idle(files: Any, pid: int, idle: float, stopping: threading.Event,
                     shutdown: Callable[[], None]) -> None:
    """Serve until no server has held ``users.lock`` for ``idle`` seconds, ``stopping`` is
    set, or the state file no longer names ``pid``; then, holding ``start.lock`` (no server
    joins meanwhile), stop the server (``shutdown``) and remove the state file."""
    import fcntl

    users = open(files.users_lock, "a+")  # noqa: SIM115 - probed for the whole life of the sandbox
    idle_since: float | None = None
    while not stopping.wait(IDLE_POLL_SECONDS):
        state = files.read_state()
        if state is None or state.get("pid") != pid:
            break  # removed or replaced (the data dir was reset): not ours to serve any more
        if _used(users):
            idle_since = None
            continue
        idle_since = idle_since if idle_since is not None else time.monotonic()
        if time.monotonic() - idle_since < idle:
            continue
        with files.starting():
            if not _used(users):
                shutdown()
                files.remove_state(pid)
                return
        idle_since = None
    with files.lock(files.start_lock, fcntl.LOCK_EX):
        shutdown()
        files.remove_state(pid)


def _used(users: Any) -> bool:
    """True while some server holds its shared lock on ``users.lock``."""
    import fcntl

    try:
        fcntl.flock(users.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(users.fileno(), fcntl.LOCK_UN)
    return False


def _reporter(files: Any, me: dict[str, Any]) -> Callable[..., None]:
    """``say(**fields)``: write ``me`` plus ``fields`` as the state file, unless it now names
    another process (then this sandbox is no longer the data directory's)."""

    def say(**update: Any) -> None:
        current = files.read_state()
        if current is None or current.get("pid") == me["pid"]:
            files.write_state({**me, **update})

    return say


def _listen(port: int | None) -> tuple[Any, str]:
    """moto's server on 127.0.0.1:``port`` (a free one when None), serving in a thread.

    Raises:
        OSError: the port is taken (errno 98), or another socket error.
    """
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if port:  # werkzeug answers a taken port with a message and sys.exit: find out first
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    server = make_server("127.0.0.1", port or 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _seed(endpoint: str, options: dict[str, Any], now: datetime) -> tuple[dict[str, int], list[str]]:
    """Seed the scenario anchored at ``now`` into this process's moto (its in-process
    backends); return the counts and every seeded queue name (sources, then DLQs)."""
    from opsmcp.sandbox import SANDBOX_CREDENTIALS
    from opsmcp.sandbox.inprocess import InProcessClients
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    os.environ.update(SANDBOX_CREDENTIALS)
    settings: Any = SeedSettings(aws_endpoint_url=endpoint, **options)  # duck-typed Settings
    scenario = build_scenario(now)
    counts = seed_aws(settings, scenario, clients=InProcessClients(settings))
    return counts, [q.name for q in scenario.queues] + [q.dlq for q in scenario.queues if q.dlq]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
