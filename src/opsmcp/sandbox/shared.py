"""One embedded sandbox per data directory, shared by every ``opsmcp serve`` that uses it.

Clients that start a server per tool call (langchain-mcp-adapters' default ``get_tools()``)
must meet the same sandbox on every call: what one call's redrive moved, the next one sees.
So the sandbox (moto and its seeded incident, :mod:`.process`) runs in a process of its
own, started by the first server that needs it, found and reused by the later ones, and
ended when no server has used it for ``sandbox_idle_seconds``.

Its files live in ``<data dir>/sandbox/`` (mode 0700):

- ``state.json``: the sandbox's pid (and its start time, so a recycled pid is not mistaken
  for it), its state (``starting``, ``listening``, ``ready``, ``error``), the endpoint, what
  was seeded, and the seed settings. Written only by the sandbox, atomically.
- ``start.lock``: held (exclusive ``flock``) by a server while it finds or starts the
  sandbox, and by the sandbox while it decides to stop, so no server joins one that is
  stopping.
- ``users.lock``: every server using the sandbox holds a shared ``flock`` on it for its
  lifetime; the kernel drops it when the server exits, however it exits. The sandbox sees
  "no users" when it can take the lock exclusively.
- ``moto.log``: the sandbox process's stderr.

A state file whose process is gone (killed, machine rebooted) is stale: the next server
removes it and starts a new sandbox.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opsmcp.sandbox.files import SandboxFiles, alive

if TYPE_CHECKING:
    from opsmcp.config import Settings

#: How long a server waits for a new sandbox's moto server to listen, seconds (moto's import
#: takes 1-2 s on an idle machine).
LISTEN_TIMEOUT = 90.0
#: How long a server waits for the seeding to finish, seconds.
SEED_TIMEOUT = 180.0
#: How often the state file is read while waiting, seconds.
POLL_SECONDS = 0.02


@dataclass
class SharedSandbox:
    """This server's use of the data directory's sandbox, from :meth:`Joining.attach`.

    Attributes:
        endpoint: moto's URL. settings: the server's settings pointed at it.
        started_here: this server started the sandbox (else it joined a running one).
        counts / queues / seconds: what was seeded and how long it took (after
            :meth:`wait_seeded`).
    """

    files: SandboxFiles
    users: IO[str] | None
    endpoint: str
    settings: Settings
    started_here: bool
    pid: int
    started: float = field(default_factory=time.perf_counter)
    proc: subprocess.Popen[bytes] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)
    seconds: float = 0.0
    audit_table: str | None = None  # this server's audit table, missing from the sandbox: created at seeding
    seeded_at_join: bool = False  # the sandbox was already seeded when this server joined it

    def wait_seeded(self, timeout: float = SEED_TIMEOUT) -> dict[str, int]:
        """Wait until the sandbox is seeded; return what it holds (the banner's counts).

        Raises:
            RuntimeError: seeding failed, or the sandbox process ended (the message says why).
        """
        state = _wait(self.files, self.pid, self.proc, ("ready",), timeout, "seeded")
        self.counts = {str(k): int(v) for k, v in state.get("counts", {}).items()}
        self.queues = [str(q) for q in state.get("queues", [])]
        self.seconds = time.perf_counter() - self.started if self.started_here else float(state.get("seconds", 0))
        if self.audit_table:  # OPSMCP_AUDIT_TABLE that the sandbox was not started with
            from opsmcp.backends.aws import AwsClients
            from opsmcp.sandbox.seed import create_audit_table

            create_audit_table(AwsClients(self.settings).client("dynamodb"), self.audit_table)
        return self.counts

    def leave(self) -> bool:
        """Stop using the sandbox (it ends once no server has used it for its idle time).

        Returns:
            True when no other server uses it now (it outlives this one by its idle time).
        """
        if self.users is not None:
            self.users.close()
            self.users = None
        try:
            with self.files.lock(self.files.users_lock, fcntl.LOCK_EX | fcntl.LOCK_NB):
                return True
        except OSError:
            return False


@dataclass
class Joining:
    """A server on its way into the sandbox: it holds ``start.lock`` until :meth:`attach`."""

    files: SandboxFiles
    settings: Settings
    start: IO[str]
    users: IO[str]
    state: dict[str, Any] | None  # the running sandbox's state when it already listens
    pid: int  # the sandbox's process
    proc: subprocess.Popen[bytes] | None  # when this server started it
    started: float

    def attach(self) -> SharedSandbox:
        """Wait until the sandbox listens; release ``start.lock``; return this server's
        :class:`SharedSandbox` (seeding may still go on: :meth:`SharedSandbox.wait_seeded`).

        Raises:
            OpsError: the sandbox could not start (its port is taken, moto failed): the
                message says why and what to do.
        """
        from opsmcp.errors import OpsError

        try:
            state = self.state
            if state is None:
                state = _wait(self.files, self.pid, self.proc, ("listening", "ready"), LISTEN_TIMEOUT, "listening")
        except RuntimeError as exc:
            self.users.close()
            port = self.settings.sandbox_port
            hint = (f"pick a free port for --sandbox-port (OPSMCP_SANDBOX_PORT), or leave it out; {port} is taken"
                    if port and "in use" in str(exc) else f"see {self.files.log}; or configure AWS "
                    "(AWS_ENDPOINT_URL / AWS_PROFILE).")
            raise OpsError(f"the embedded sandbox failed to start: {exc}", hint) from exc
        finally:
            self.start.close()
        endpoint = str(state["endpoint"])
        from opsmcp.sandbox import sandbox_target

        seed = state.get("seed") or {}
        settings = sandbox_target(self.settings, endpoint, seed)
        audit_table = self.settings.audit_table if self.settings.audit_table != seed.get("audit_table") else None
        return SharedSandbox(files=self.files, users=self.users, endpoint=endpoint, settings=settings,
                             started_here=self.proc is not None, pid=self.pid, started=self.started,
                             proc=self.proc, audit_table=audit_table,
                             seeded_at_join=state.get("state") == "ready")


def join(settings: Settings) -> Joining:
    """Find the data directory's sandbox, or start one; return at once (see :meth:`Joining.attach`).

    Takes ``start.lock`` (waiting while another server starts the sandbox or the sandbox
    decides to stop), then this server's shared lock on ``users.lock``. A running sandbox is
    reused as it is (its port and seed settings win over this server's); otherwise a stale
    state file is removed and a new sandbox process is started in its own session (Ctrl-C
    in a terminal never reaches it) with ``settings.sandbox_port`` (default: a free port).

    Raises:
        OpsError: moto (the ``sandbox`` extra) is not installed.
        OSError: the data directory cannot be created.
    """
    from opsmcp.errors import OpsError
    from opsmcp.sandbox import MISSING_EXTRA, moto_installed
    from opsmcp.sandbox.process import SEED_FIELDS

    if not moto_installed():
        raise OpsError(MISSING_EXTRA)
    started = time.perf_counter()
    files = SandboxFiles(settings.data_dir)
    files.make()
    start = files.lock(files.start_lock, fcntl.LOCK_EX)
    try:
        users = files.lock(files.users_lock, fcntl.LOCK_SH)  # before a new sandbox could see "no users"
        state = files.read_state()
        if state is not None and alive(state) and state.get("state") in ("starting", "listening", "ready"):
            ready = state if state.get("state") != "starting" else None  # else its starter was killed: wait
            return Joining(files, settings, start, users, ready, int(state["pid"]), None, started)
        files.remove_state()  # none, or stale: its process is gone (or failed)
        options = {"data_dir": str(settings.data_dir), "port": settings.sandbox_port,
                   "idle_seconds": settings.sandbox_idle_seconds,
                   "settings": {k: getattr(settings, k) for k in SEED_FIELDS}}
        with open(files.log, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "opsmcp.sandbox.process", json.dumps(options)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
        return Joining(files, settings, start, users, None, proc.pid, proc, started)
    except BaseException:
        start.close()
        raise


def running(data_dir: Path) -> dict[str, Any] | None:
    """The state of the data directory's running sandbox, or None (none, or a stale file)."""
    state = SandboxFiles(data_dir).read_state()
    return state if state is not None and alive(state) else None


def stop(data_dir: Path, timeout: float = 15.0) -> str:
    """Stop the data directory's sandbox now (SIGTERM; servers still using it lose it).

    Returns:
        One line saying what happened.
    """
    import signal

    import psutil

    files = SandboxFiles(data_dir)
    state = running(data_dir)
    if state is None:
        files.remove_state()
        return f"no sandbox runs for {data_dir}"
    proc = psutil.Process(int(state["pid"]))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    return f"stopped the sandbox at {state.get('endpoint', '?')} (pid {state['pid']}) of {data_dir}"


def _wait(files: SandboxFiles, pid: int, proc: subprocess.Popen[bytes] | None, want: tuple[str, ...],
          timeout: float, what: str) -> dict[str, Any]:
    """Poll the state file until the sandbox ``pid`` reaches a state in ``want``; return it.

    Raises:
        RuntimeError: it reported an error, its process ended, or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = files.read_state()
        if state is not None and state.get("pid") == pid:
            if state.get("state") in want:
                return state
            if state.get("state") == "error":
                raise RuntimeError(str(state.get("error")))
        ended = proc.poll() is not None if proc is not None else (state is None or not alive(state))
        if ended:
            code = f" (code {proc.returncode})" if proc is not None else ""
            raise RuntimeError(f"the sandbox process exited{code} before it was {what}: {_last_line(files.log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox was not {what} within {timeout:.0f} s: {_last_line(files.log)}")
        time.sleep(POLL_SECONDS)  # a bounded readiness poll of a small local file


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"{log} is unreadable"
    return lines[-1] if lines else f"nothing in {log}"
