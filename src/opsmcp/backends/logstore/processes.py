"""Worker processes that stage batches (parse JSON Lines) beside the single writer.

Each worker is a Python running :func:`~opsmcp.backends.logstore.stager.serve`: it reads pickled
``stage_batch`` arguments from its stdin and writes pickled results to its stdout, one
after the other (pickles delimit themselves). Plain child processes rather than
``multiprocessing``: nothing of the loading process is forked (it may have threads) and
its ``__main__`` is never re-imported (a caller's script needs no ``__main__`` guard).
A worker whose loader dies sees end-of-file on stdin and exits; it never touches the store.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

import opsmcp
from opsmcp.errors import OpsError

PROTOCOL = pickle.HIGHEST_PROTOCOL
WORKER = "import sys; from opsmcp.backends.logstore.stager import serve; serve(sys.stdin.buffer, sys.stdout.buffer)"


class StagerProcesses:
    """``n`` worker processes; :meth:`submit` hands batches out in turn.

    Results come back as futures, in any order; a reader thread per worker drains its
    stdout as soon as results arrive (so a worker never blocks on a full pipe while this
    process is busy writing it a new batch). Use as a context manager, or call
    :meth:`close`. Not thread-safe for concurrent ``submit`` calls (one producer).
    """

    def __init__(self, n: int) -> None:
        env = dict(os.environ)
        root = str(Path(opsmcp.__file__).resolve().parents[1])  # the same opsmcp as this process
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._pending: list[collections.deque[Future[Any]]] = []
        self._readers: list[threading.Thread] = []
        self._next = 0
        try:
            for i in range(max(1, n)):
                proc = subprocess.Popen(
                    [sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=False,
                )
                pending: collections.deque[Future[Any]] = collections.deque()
                reader = threading.Thread(target=self._read, args=(proc.stdout, pending),
                                          name=f"logstore-stager-{i}", daemon=True)
                self._procs.append(proc)
                self._pending.append(pending)
                self._readers.append(reader)
                reader.start()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _read(out: IO[bytes], pending: collections.deque[Future[Any]]) -> None:
        try:
            while True:
                try:
                    kind, value = pickle.load(out)
                except Exception:  # end of file, a dead worker, or an answer that does not unpickle
                    break
                fut = pending.popleft()
                if kind == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(OpsError(f"A log parser process failed: {value}",
                                               "re-run the load; it continues after the stored lines."))
        finally:
            while pending:
                fut = pending.popleft()
                if not fut.done():
                    fut.set_exception(OpsError("A log parser process stopped before it answered.",
                                               "re-run the load; it continues after the stored lines."))

    def submit(self, *args: Any) -> Future[Any]:
        """Send one ``stage_batch(*args)`` call to the next worker; its future result."""
        i = self._next
        self._next = (i + 1) % len(self._procs)
        fut: Future[Any] = Future()
        fut.set_running_or_notify_cancel()
        self._pending[i].append(fut)
        stdin = self._procs[i].stdin
        assert stdin is not None
        try:
            pickle.dump(args, stdin, protocol=PROTOCOL)
            stdin.flush()
        except OSError:
            self._readers[i].join(5)  # the reader fails the pending futures when the worker is gone
            if not fut.done():
                fut.set_exception(OpsError("A log parser process stopped.", "re-run the load."))
        return fut

    def close(self, *, kill: bool = False) -> None:
        """Close the workers' stdin (they exit), wait for them briefly, kill stragglers
        (with ``kill``, at once: their pending results are not wanted)."""
        for proc in self._procs:
            if kill:
                with contextlib.suppress(OSError):
                    proc.kill()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(5)
        for proc in self._procs:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> StagerProcesses:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(kill=exc_type is not None)
