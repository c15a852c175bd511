"""The store file: opening it safely, a small pool of read connections, bounded reads.

:class:`StoreFile` is the base of :class:`~opsmcp.backends.logstore.store.LogStore`: it
opens read connections (``mode=ro`` for a read-only store; never creates the file) and
the write connection (creating the schema), checks the schema version, and maps SQLite
failures to :mod:`opsmcp.errors` types naming the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from opsmcp.backends.logstore.fts import fts_error, is_fts_error
from opsmcp.backends.logstore.schema import READER_MMAP_BYTES, SCHEMA, SCHEMA_VERSION
from opsmcp.errors import BackendUnavailable, NotFound, OpsError
from opsmcp.private import create_private

QUERY_DEADLINE_S = 5.0
MAX_IDLE_READERS = 8
LOAD_HINT = "load JSON Lines with `opsmcp logs load FILE` (or set OPSMCP_LOG_STORE to another store)."


class StoreFile:
    """Connections to the SQLite log store at ``path``.

    Args:
        path: the store file (created by the first load; queries never create it).
        readonly: open read-only (``mode=ro``): queries only, loads are refused.
        busy_timeout_ms: how long a statement waits for a lock.

    Thread-safe: each query borrows a read connection from a small pool (one connection
    is used by one thread at a time; threads that come and go, like anyio's workers, do
    not leak connections); a load uses a write connection of its own, so readers keep
    answering (from the last committed batch) while it runs.
    """

    def __init__(self, path: Path | str, *, readonly: bool = False, busy_timeout_ms: int = 5_000) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []  # read connections not in use
        self._closed = False
        self._write_lock = threading.Lock()

    # ---------------------------------------------------------------- connections

    def _uri(self, mode: str) -> str:
        return f"file:{quote(str(self.path.resolve()))}?mode={mode}"

    def _corrupt(self, exc: BaseException) -> OpsError:
        return OpsError(
            f"The log store {self.path} is not a readable opsmcp log store ({exc}).",
            f"move the file aside, then {LOAD_HINT}",
        )

    def _missing(self) -> NotFound:
        return NotFound(f"No log store at {self.path}.", LOAD_HINT)

    def _foreign(self) -> OpsError:
        return OpsError(
            f"The file {self.path} is an SQLite database but not an opsmcp log store (no `meta` table).",
            f"point OPSMCP_LOG_STORE at a log store, or move the file aside and {LOAD_HINT}",
        )

    def _error(self, exc: sqlite3.Error) -> OpsError:
        """Map an SQLite failure that is not the caller's fault to an error naming the file."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return BackendUnavailable(
                f"The log store {self.path} is busy ({text}).", "retry in a few seconds; a load may be running."
            )
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            if not self.path.exists():
                return self._missing()
            return OpsError(f"Cannot open the log store {self.path} ({text}).",
                            "check that the file and its directory are readable (and writable for loads).")
        return self._corrupt(exc)

    def _open(self, *, write: bool) -> sqlite3.Connection:
        if write:
            if self.readonly:
                raise OpsError(f"The log store {self.path} is open read-only.", "load with `opsmcp logs load FILE`.")
            create_private(self.path)  # 0600 (its -wal and -shm too), in a 0700 directory when new
            mode = "rwc"
        else:
            if not self.path.exists():
                raise self._missing()
            mode = "ro" if self.readonly else "rw"
        try:
            conn = sqlite3.connect(
                self._uri(mode), uri=True, isolation_level=None, check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
        except sqlite3.Error as exc:
            if not self.path.exists():
                raise self._missing() from None
            raise self._error(exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            if write:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables and "meta" not in tables:
                    conn.close()
                    raise self._foreign()
                conn.execute("PRAGMA page_size=8192")  # only takes effect on a new file
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
                conn.execute("PRAGMA wal_autocheckpoint=8192")
                conn.executescript(SCHEMA)
            else:
                conn.execute("PRAGMA cache_size=-8192")  # 8 MiB; the mapped file does the rest
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            if "no such table" in str(exc):
                raise self._foreign() from None
            raise self._error(exc) from None
        if not version or int(version[0]) != SCHEMA_VERSION:
            conn.close()
            raise OpsError(
                f"The log store {self.path} has schema version {version[0] if version else None}, "
                f"this opsmcp reads version {SCHEMA_VERSION}.",
                f"move the file aside and reload: {LOAD_HINT}",
            )
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._open(write=False)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_READERS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle read connections; connections in use close when released."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, fn: Callable[[sqlite3.Connection], Any], *, fts: str | None = None) -> Any:
        """Run ``fn`` in one read transaction (a consistent snapshot), bounded in time."""
        conn = self._acquire()
        try:
            return self._read_on(conn, fn, fts)
        finally:
            self._release(conn)

    def _read_on(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any], fts: str | None) -> Any:
        deadline = time.monotonic() + QUERY_DEADLINE_S

        def check() -> int:
            return 1 if time.monotonic() > deadline else 0

        conn.set_progress_handler(check, 20_000)
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise OpsError(
                    f"The log query took longer than {QUERY_DEADLINE_S:.0f} s and was stopped.",
                    "narrow the time window (start/end) or add service/level filters.",
                ) from None
            if fts is not None and is_fts_error(exc):
                raise fts_error(fts, exc) from None
            raise self._error(exc) from None
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            conn.set_progress_handler(None, 0)
