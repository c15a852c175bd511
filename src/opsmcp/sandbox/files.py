"""The shared sandbox's files in ``<data dir>/sandbox/`` and the checks on its process.

Read by the servers (:mod:`.shared`) and written by the sandbox process (:mod:`.process`);
see :mod:`.shared` for what each file means.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from opsmcp.private import open_private, private_dir, replace_private


class SandboxFiles:
    """The shared sandbox's files in ``<data_dir>/sandbox/`` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "sandbox"
        self.state = self.dir / "state.json"
        self.start_lock = self.dir / "start.lock"
        self.users_lock = self.dir / "users.lock"
        self.log = self.dir / "moto.log"

    def make(self) -> None:
        """Create the directory (0700)."""
        private_dir(self.dir)

    def lock(self, path: Path, mode: int) -> IO[str]:
        """Open ``path`` and ``flock`` it with ``mode`` (blocking unless ``LOCK_NB``); the
        returned file holds the lock until it is closed."""
        fh = os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND | os.O_CREAT), "a+")  # held open as the lock (0600)
        try:
            fcntl.flock(fh.fileno(), mode)
        except BaseException:
            fh.close()
            raise
        return fh

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Hold ``start.lock`` exclusively for the block."""
        with self.lock(self.start_lock, fcntl.LOCK_EX):
            yield

    def read_state(self) -> dict[str, Any] | None:
        """The state file's content, or None when there is none (or it is unreadable)."""
        try:
            state = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace the state file atomically (:func:`~opsmcp.private.replace_private`), mode 0600."""
        replace_private(self.state, json.dumps(state).encode())

    def remove_state(self, pid: int | None = None) -> None:
        """Remove the state file (only if it belongs to ``pid``, when given)."""
        state = self.read_state()
        if pid is None or (state is not None and state.get("pid") == pid):
            self.state.unlink(missing_ok=True)


def alive(state: dict[str, Any]) -> bool:
    """True when the process ``state`` names still runs (same pid and start time; not a zombie)."""
    import psutil

    try:
        proc = psutil.Process(int(state["pid"]))
        return (abs(proc.create_time() - float(state.get("created", 0))) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def process_start_time(pid: int) -> float:
    """When process ``pid`` started (epoch seconds, as :func:`alive` compares it)."""
    import psutil

    return float(psutil.Process(pid).create_time())
