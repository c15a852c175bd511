"""The embedded log store: one SQLite file with FTS5, the default log backend.

Schema (version 1), designed so that every tool query is an index range scan:

``logs``
    ``id INTEGER PRIMARY KEY`` is ``(timestamp_ms << 20) | seq``: the rowid *is* the time
    index. Time windows are rowid ranges, "newest first" is a reverse rowid scan, and the
    FTS5 index (keyed by the same rowid) can return matches newest first and inside a
    window without touching the table. ``ts`` is a virtual column (``id >> 20``, epoch
    milliseconds) for hand-written SQL. ``seq`` (20 bits) keeps ids unique within one
    millisecond. ``service``, ``level``, ``trace_id`` and ``event_id`` are plain TEXT
    compared with ``=`` (never tokenized: a trace id matches that trace only);
    ``message`` is the text FTS5 indexes; ``doc`` is the original JSON line, verbatim.
``logs_fts``
    FTS5, contentless (the text lives in ``logs``), unicode61 tokenizer, no per-document
    sizes (results are ordered by time, not rank). Column ``message`` is the searched
    text; column ``tags`` holds two terms per line, ``s<hex(service)>`` and
    ``l<hex(level)>``, so a full-text search filtered by service/level is one FTS5
    doclist intersection instead of a row check per text match.
``rollup_1m`` / ``rollup_15m``
    Line counts per (service, level, minute) and per 15 minutes, kept in the same
    transaction as the lines, so ``stats`` and exact counts never scan lines. Rows with
    service and/or level ``'*'`` hold the sums over all services/levels, so every
    count reads exactly the rows it needs.
``facets``
    The known services and levels with their line counts (the "did you mean" lists).
``meta``
    Schema version and the next ``seq``.

Indexes: ``(trace_id)``, ``(service, level)`` and ``(level)``; each implicitly ends in
the rowid, so they are also ordered by time within a value.

Concurrency: WAL mode, so readers never block the loader and see whole batches only
(each batch's lines, FTS entries and counts commit together). Every thread gets its own
read connection; a load uses its own write connection.

Errors are :mod:`opsmcp.errors` types: a missing file is :class:`NotFound` naming the
path and the load command; a file that is not a log store (or is corrupt) is
:class:`OpsError` naming the path; a malformed full-text query is :class:`InvalidInput`
with an example of valid syntax.
"""

from __future__ import annotations

import io
import itertools
import json
import queue
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError

SCHEMA_VERSION = 1
SEQ_BITS = 20
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_TS_MS = (1 << (63 - SEQ_BITS)) - 1  # ~ year 2248
MINUTE_MS = 60_000
COARSE_MS = 15 * MINUTE_MS
ERROR_LEVELS = ("ERROR", "CRITICAL", "FATAL")
COUNT_CAP = 10_000  # full-text matches are counted up to this many
MAX_BAD_REPORTED = 50
_ONE_BUCKET_MS = COARSE_MS << 40  # an interval wider than any store: "count everything"
QUERY_DEADLINE_S = 5.0
READER_MMAP_BYTES = 256 << 20  # readers map the file: fewer copies on index and FTS scans
MAX_IDLE_READERS = 8
LOAD_HINT = "load JSON Lines with `opsmcp logs load FILE` (or set OPSMCP_LOG_STORE to another store)."
FTS_EXAMPLES = (
    'valid examples: timeout (a word) · "connection timeout" (a phrase) · '
    "payment AND declined · gateway OR timeout · timeout NOT retry · time* (a prefix) · "
    '"orders-db.cluster" (quote words with punctuation); operators in capitals.'
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_UTC = UTC

_LEVEL_ALIASES = {"WARNING": "WARN", "ERR": "ERROR", "INFORMATION": "INFO", "CRIT": "CRITICAL", "EMERG": "FATAL"}
_NUMERIC_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}  # pino/bunyan
_LEVEL_CACHE: dict[str, str] = {}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs(
    id INTEGER PRIMARY KEY,            -- (timestamp_ms << {SEQ_BITS}) | seq
    service TEXT NOT NULL,
    level TEXT NOT NULL,
    trace_id TEXT,
    event_id TEXT,
    message TEXT NOT NULL,
    doc TEXT NOT NULL,                 -- the original JSON line
    ts INTEGER GENERATED ALWAYS AS (id >> {SEQ_BITS}) VIRTUAL  -- epoch milliseconds
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs(trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_service_level ON logs(service, level);
CREATE INDEX IF NOT EXISTS logs_level ON logs(level);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(
    message,                           -- the text searched
    tags,                              -- 's<hex(service)> l<hex(level)>': filters inside the index
    content='', columnsize=0
);
CREATE TABLE IF NOT EXISTS rollup_1m(     -- service or level '*' = all of them
    service TEXT NOT NULL, level TEXT NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY(service, level, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_15m(
    service TEXT NOT NULL, level TEXT NOT NULL, slot INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY(service, level, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS facets(
    kind TEXT NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY(kind, value)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('schema_version', {SCHEMA_VERSION}), ('next_seq', 0);
"""

_STAGE_TABLE = """CREATE TABLE batch(
    id INTEGER PRIMARY KEY, service TEXT, level TEXT, trace_id TEXT, event_id TEXT, message TEXT, doc TEXT
)"""

_UPSERTS = (
    ("INSERT INTO rollup_1m(service, level, minute, n) VALUES (?,?,?,?) "
     "ON CONFLICT DO UPDATE SET n = n + excluded.n"),
    ("INSERT INTO rollup_15m(service, level, slot, n) VALUES (?,?,?,?) "
     "ON CONFLICT DO UPDATE SET n = n + excluded.n"),
    "INSERT INTO facets(kind, value, n) VALUES (?,?,?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
)


# --------------------------------------------------------------------------- results


@dataclass
class BadLine:
    """One input line that was not loaded: where it was and why."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class IngestReport:
    """What a load did. Bad lines are counted in full; the first 50 are listed."""

    loaded: int = 0
    bad: int = 0
    blank: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def lines_per_second(self) -> float:
        """Loaded lines per second of wall time."""
        return self.loaded / self.seconds if self.seconds > 0 else 0.0

    def _add_bad(self, source: str, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < MAX_BAD_REPORTED:
            self.bad_lines.append(BadLine(source, line, reason))

    def summary(self) -> str:
        """A few human lines: counts, speed, and the bad lines with their numbers."""
        out = [
            f"loaded {self.loaded:,} lines from {', '.join(self.sources) or '-'} in {self.seconds:.2f} s "
            f"({self.lines_per_second:,.0f} lines/s); bad lines: {self.bad:,}"
            + (f"; blank lines skipped: {self.blank:,}" if self.blank else "")
        ]
        out += [f"  {b}" for b in self.bad_lines]
        if self.bad > len(self.bad_lines):
            out.append(f"  ... and {self.bad - len(self.bad_lines):,} more bad lines")
        return "\n".join(out)


@dataclass(slots=True)
class LogRecord:
    """One stored log line. ``timestamp`` is ISO-8601 UTC with milliseconds."""

    id: int
    timestamp: str
    service: str
    level: str
    message: str
    trace_id: str | None = None
    event_id: str | None = None
    doc: str | None = None  # the original JSON line, when asked for

    @property
    def ts_ms(self) -> int:
        """Epoch milliseconds."""
        return self.id >> SEQ_BITS

    def fields(self) -> dict[str, Any]:
        """The original document's fields other than the indexed ones (needs ``doc``)."""
        if not self.doc:
            return {}
        try:
            data = json.loads(self.doc)
        except ValueError:
            return {}
        for key in ("@timestamp", "timestamp", "level", "service", "message", "trace_id", "event_id"):
            data.pop(key, None)
        return data


@dataclass
class SearchPage:
    """Hits newest first, the number of matching lines and the cursor for the next page."""

    hits: list[LogRecord]
    total: int
    total_exact: bool
    next_cursor: str | None


@dataclass
class TraceLines:
    """All lines of one trace, oldest first (at most ``limit``), and what it touched."""

    trace_id: str
    lines: list[LogRecord]
    line_count: int
    services: list[str]
    first_error: LogRecord | None


@dataclass
class StatsGroup:
    """Counts of one group (a level or a service) per bucket."""

    key: str
    total: int
    counts: list[int]
    first_ms: int | None
    last_ms: int | None


@dataclass
class Stats:
    """Bucketed counts: ``bucket_starts_ms[i]`` is the start of ``counts[i]`` in every group."""

    start_ms: int
    end_ms: int
    interval_ms: int
    group_by: str
    bucket_starts_ms: list[int]
    groups: list[StatsGroup]
    total: int


# --------------------------------------------------------------------------- helpers


def to_ms(t: datetime) -> int:
    """Epoch milliseconds of an aware (or naive = UTC) datetime, exactly."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_UTC)
    return (t - _EPOCH) // _ONE_MS


def ms_to_datetime(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


_ISO_SECONDS: dict[int, str] = {}


def ms_iso(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` for epoch milliseconds (cached per second)."""
    sec, frac = divmod(ms, 1000)
    head = _ISO_SECONDS.get(sec)
    if head is None:
        if len(_ISO_SECONDS) > 8192:
            _ISO_SECONDS.clear()
        head = _ISO_SECONDS[sec] = (_EPOCH + timedelta(seconds=sec)).isoformat().replace("+00:00", "")
    return f"{head}.{frac:03d}Z"


def normalize_level(value: Any) -> str:
    """Canonical level: upper case, ``WARNING``→``WARN``, ``ERR``→``ERROR``, pino numbers."""
    if isinstance(value, str):
        hit = _LEVEL_CACHE.get(value)
        if hit is not None:
            return hit
        canon = value.strip().upper()
        canon = _LEVEL_ALIASES.get(canon, canon)
        if not canon or canon == "*":
            canon = "UNKNOWN"
        if len(_LEVEL_CACHE) < 1000:
            _LEVEL_CACHE[value] = canon
        return canon
    if isinstance(value, bool) or value is None:
        return "UNKNOWN"
    if isinstance(value, (int, float)):
        return _NUMERIC_LEVELS.get(int(value), str(int(value)))
    return str(value).upper()


def _ts_from_number(value: float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds → milliseconds."""
    v = abs(value)
    if v < 1e11:
        return round(value * 1000)
    if v < 1e14:
        return round(value)
    if v < 1e17:
        return round(value / 1000)
    return round(value / 1_000_000)


def _parse_ts(value: Any) -> int:
    """A document's timestamp → epoch ms. Raises ValueError with a short reason."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            text = value.strip()
            try:
                ms = _ts_from_number(float(text))
            except ValueError:
                try:  # pre-3.11 shapes fromisoformat may reject (lower-case z, comma decimals)
                    dt = datetime.fromisoformat(text.replace("z", "+00:00").replace(",", "."))
                except ValueError:
                    raise ValueError(f"timestamp {value[:40]!r} is not ISO-8601 or epoch time") from None
            else:
                dt = None
        if dt is not None:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=_UTC)
            ms = (dt - _EPOCH) // _ONE_MS
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("timestamp is not a finite number")
        ms = _ts_from_number(value)
    elif value is None:
        raise ValueError("no @timestamp or timestamp field")
    else:
        raise ValueError(f"timestamp has type {type(value).__name__}, expected an ISO-8601 string or epoch number")
    if not 0 <= ms <= MAX_TS_MS:
        raise ValueError(f"timestamp {value!r} is out of range (1970..2248)")
    return ms


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def parse_batch(
    batch: Sequence[tuple[int, str]], seq: int, source: str, report: IngestReport,
    counts: dict[tuple[int, str, str], int] | None = None, *, yield_every: int = 0,
) -> list[tuple[Any, ...]]:
    """Parse ``(line number, text)`` pairs into ``logs`` rows; count bad and blank lines.

    ``counts`` (when given) is incremented per (minute, service, level) of the good lines.
    ``yield_every`` > 0 releases the GIL every that many lines, so a writer thread that
    finished a statement does not wait for the interpreter's 5 ms switch interval.

    Fields: ``@timestamp`` | ``timestamp`` | ``time`` | ``ts`` (ISO-8601, or epoch
    s/ms/us/ns), ``message`` | ``msg`` (required), ``level`` | ``severity`` (default
    ``UNKNOWN``), ``service`` | ``service.name`` | ``app`` (default ``unknown``),
    ``trace_id`` | ``traceId`` | ``trace.id``, ``event_id`` | ``eventId``.
    """
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    if counts is None:
        counts = {}
    cget = counts.get
    loads = json.loads
    fromiso = datetime.fromisoformat
    epoch, one_ms, utc = _EPOCH, _ONE_MS, _UTC
    level_cache = _LEVEL_CACHE
    pause = time.sleep
    for no, line in batch:
        if yield_every and not no % yield_every:
            pause(0)
        if not line.isascii() and _SURROGATE.search(line):
            report._add_bad(source, no, "not valid UTF-8")
            continue
        try:
            doc = loads(line)
        except ValueError as exc:
            if not line.strip():
                report.blank += 1
                continue
            msg = getattr(exc, "msg", str(exc))
            pos = getattr(exc, "pos", None)
            report._add_bad(source, no, f"invalid JSON ({msg}" + (f" at character {pos + 1})" if pos is not None else ")"))
            continue
        except RecursionError:
            report._add_bad(source, no, "invalid JSON (nested too deeply)")
            continue
        if type(doc) is not dict:
            kind = "array" if isinstance(doc, list) else type(doc).__name__
            report._add_bad(source, no, f"not a JSON object (a JSON {kind}; one object per line expected)")
            continue
        get = doc.get
        ts = get("@timestamp")
        if ts is None:
            ts = get("timestamp")
            if ts is None:
                ts = get("time")
                if ts is None:
                    ts = get("ts")
        if type(ts) is str:
            try:
                dt = fromiso(ts)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=utc)
                ms = (dt - epoch) // one_ms
                if not 0 <= ms <= MAX_TS_MS:
                    raise ValueError
            except (ValueError, OverflowError):
                try:
                    ms = _parse_ts(ts)
                except (ValueError, OverflowError) as exc:
                    report._add_bad(source, no, str(exc))
                    continue
        else:
            try:
                ms = _parse_ts(ts)
            except (ValueError, OverflowError) as exc:
                report._add_bad(source, no, str(exc))
                continue
        message = get("message")
        if message is None:
            message = get("msg")
            if message is None:
                report._add_bad(source, no, "no message field")
                continue
        if type(message) is not str:
            message = _text(message)
        level = get("level")
        if level is None:
            level = get("severity")
        if type(level) is str:
            lv = level_cache.get(level)
            level = lv if lv is not None else normalize_level(level)
        else:
            level = normalize_level(level)
        service = get("service")
        if service is None:
            service = get("service.name") or get("app") or "unknown"
        if type(service) is not str:
            service = _text(service) if not isinstance(service, dict) else _text(service.get("name")) or "unknown"
        if not service or service == "*":
            service = "unknown"
        trace = get("trace_id")
        if trace is None:
            trace = get("traceId")
            if trace is None:
                trace = get("trace.id")
        if trace is not None and type(trace) is not str:
            trace = _text(trace)
        event = get("event_id")
        if event is None:
            event = get("eventId")
        if event is not None and type(event) is not str:
            event = _text(event)
        if ("\\ud" in line or "\\uD" in line) and any(
                isinstance(v, str) and _SURROGATE.search(v) for v in (message, service, level, trace, event)):
            report._add_bad(source, no, "a string holds an unpaired UTF-16 surrogate escape (\\udXXX)")
            continue
        append(((ms << SEQ_BITS) | (seq & SEQ_MASK), service, level, trace, event, message, line.rstrip()))
        seq += 1
        key = (ms // 60_000, service, level)
        counts[key] = cget(key, 0) + 1
    return rows


_SURROGATE = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape), or lone surrogates
_BAREWORD = re.compile(r"^[\w\u0080-\U0010ffff]+\*?$")
_FTS_TOKEN = re.compile(r'"(?:[^"]|"")*"|[()]|[^\s()"]+')
_OPERATORS = {"AND", "OR", "NOT", "NEAR"}


def fts_query(query: str) -> str:
    """Make a user's FTS5 query literal-friendly without changing its meaning.

    Bare terms with punctuation FTS5 would reject (``orders-db.cluster:5432``,
    ``gw.paynet*``) are quoted (``"orders-db.cluster:5432"``, ``"gw.paynet"*``); words,
    "phrases", AND/OR/NOT, NEAR(), parentheses, prefixes and ``message:`` column filters
    are left alone. Queries with unbalanced quotes are returned unchanged, so FTS5 reports
    the error.

    Raises:
        InvalidInput: unbalanced parentheses (checked here, because the query is wrapped
            in ``message : ( ... )`` and must not close that group itself).
    """
    if query.count('"') % 2:
        return query
    out = []
    depth = 0
    for tok in _FTS_TOKEN.findall(query):
        depth += (tok == "(") - (tok == ")")
        if depth < 0:
            break
    if depth:
        raise InvalidInput(f"Cannot parse the full-text query {query!r}: unbalanced parentheses.", FTS_EXAMPLES)
    for tok in _FTS_TOKEN.findall(query):
        if tok.startswith('"') or tok in "()" or tok in _OPERATORS or _BAREWORD.match(tok) or (tok.lower().startswith("message:") and _BAREWORD.match(tok[8:] or "x")) or tok in ("*", "+", "^", ":", ","):
            out.append(tok)
        else:
            star = tok.endswith("*") and len(tok) > 1
            core = tok[:-1] if star else tok
            if core.lower().startswith("message:"):
                core = core[8:]
            out.append('"' + core.replace('"', '""') + '"' + ("*" if star else ""))
    return " ".join(out)


def _tag(prefix: str, value: str) -> str:
    return prefix + value.encode("utf-8").hex()


def _tag_query(service: str | None, levels: Sequence[str] | None) -> str:
    """The FTS5 terms that restrict a match to a service and to levels ('' for none)."""
    terms = []
    if service is not None:
        terms.append(_tag("s", service))
    if levels:
        lv = [_tag("l", x) for x in levels]
        terms.append(lv[0] if len(lv) == 1 else "(" + " OR ".join(lv) + ")")
    return " AND tags : (" + " AND ".join(terms) + ")" if terms else ""


def _fts_error(query: str, exc: sqlite3.Error) -> InvalidInput:
    problem = str(exc)
    problem = problem.removeprefix("fts5: ")
    if problem.startswith("no such column"):
        problem += " (the only column is `message`)"
    return InvalidInput(f"Cannot parse the full-text query {query!r}: {problem}.", FTS_EXAMPLES)


def _is_fts_error(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return (
        text.startswith("fts5:")
        or "syntax error" in text
        or "unterminated string" in text
        or "no such column" in text
        or "unknown special query" in text
        or "malformed MATCH" in text
    )


# --------------------------------------------------------------------------- the store


class LogStore:
    """The SQLite log store at ``path``.

    Args:
        path: the store file (created by the first load; queries never create it).
        readonly: open read-only (``mode=ro``): queries only, loads are refused.

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
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
                conn.executescript(_SCHEMA)
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
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> LogStore:
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
            if fts is not None and _is_fts_error(exc):
                raise _fts_error(fts, exc) from None
            raise self._error(exc) from None
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            conn.set_progress_handler(None, 0)

    # ---------------------------------------------------------------- loading

    def ingest(
        self,
        lines: Iterable[str],
        *,
        source: str = "-",
        batch_size: int = 20_000,
        on_progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Load JSON Lines (one document per string) and report what happened.

        Lines are parsed on a helper thread while the previous batch is written; each
        batch (``batch_size`` lines) is one transaction holding its lines, FTS entries and
        counts, so concurrent readers see whole batches. Bad lines (invalid JSON, not an
        object, no message, bad timestamp) are counted with their line numbers and never
        stop the load; blank lines are skipped and counted.

        Args:
            lines: the documents, one per item (a trailing newline is fine).
            source: the name used for bad-line reports (a file name, ``-`` for stdin).
            batch_size: lines per transaction.
            on_progress: called after each batch with the number of lines read so far.
        """
        return self._ingest([(source, lines)], batch_size=batch_size, on_progress=on_progress)

    def load_files(
        self, paths: Sequence[str | Path], *, show_progress: bool = False, batch_size: int = 20_000
    ) -> IngestReport:
        """Load JSON Lines files (``-`` = stdin) in one session; one report for all.

        With ``show_progress`` a rich progress bar (by bytes) is drawn on stderr.

        Raises:
            NotFound: a file does not exist (nothing is loaded).
        """
        names = [str(p) for p in paths]
        for name in names:
            if name != "-" and not Path(name).is_file():
                raise NotFound(f"No such log file: {name}.", "pass JSON Lines files, or - for stdin.")
        sizes = {name: (Path(name).stat().st_size if name != "-" else 0) for name in names}
        counter = _ByteCounter()
        sources = [(name, counter.open(name)) for name in names]
        total = sum(sizes.values())
        if not show_progress:
            return self._ingest(sources, batch_size=batch_size, on_progress=None, counter=counter)
        from rich.console import Console
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("loading logs"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[lines]:,} lines"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        with progress:
            task = progress.add_task("load", total=total or None, lines=0)

            def tick(lines_read: int) -> None:
                progress.update(task, completed=counter.bytes, lines=lines_read)

            report = self._ingest(sources, batch_size=batch_size, on_progress=tick, counter=counter)
            progress.update(task, completed=counter.bytes)
        return report

    def _ingest(
        self,
        sources: list[tuple[str, Iterable[str]]],
        *,
        batch_size: int,
        on_progress: Callable[[int], None] | None,
        counter: _ByteCounter | None = None,
    ) -> IngestReport:
        """The load pipeline: a parse thread and this (writer) thread overlap.

        The parse thread turns each batch into rows, writes them into a private
        in-memory stage database (its own connection, so the row-by-row binding does not
        hold up the writer), and hands it over. The writer copies a stage into the store
        with set-based SQL (which runs without the GIL): lines, FTS entries, rollups and
        facets in one transaction per batch.
        """
        started = time.perf_counter()
        report = IngestReport(sources=[s for s, _ in sources])
        batch_size = max(1, int(batch_size))
        with self._write_lock:
            conn = self._open(write=True)
            try:
                seq = int(conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
                q: queue.Queue[Any] = queue.Queue(maxsize=2)
                stop = threading.Event()

                def put(item: Any) -> bool:
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            return True
                        except queue.Full:
                            continue
                    if isinstance(item, _Stage):
                        item.close()
                    return False

                def produce() -> None:
                    nonlocal seq
                    read = 0
                    try:
                        for source, lines in sources:
                            it = enumerate(lines, 1)
                            while True:
                                chunk = list(itertools.islice(it, batch_size))
                                if not chunk:
                                    break
                                read += len(chunk)
                                counts: dict[tuple[int, str, str], int] = {}
                                rows = parse_batch(chunk, seq, source, report, counts, yield_every=256)
                                del chunk
                                seq += len(rows)
                                stage = _Stage(rows, counts, read, seq) if rows else _Stage.empty(read, seq)
                                del rows
                                if not put(stage):
                                    return
                        put(None)
                    except BaseException as exc:
                        put(exc)

                worker = threading.Thread(target=produce, name="logstore-parse", daemon=True)
                worker.start()
                try:
                    while True:
                        item = q.get()
                        if item is None:
                            break
                        if isinstance(item, BaseException):
                            raise item
                        try:
                            if item.rows:
                                self._write_batch(conn, item)
                                report.loaded += item.rows
                        finally:
                            item.close()
                        if on_progress is not None:
                            on_progress(item.read)
                finally:
                    stop.set()
                    while True:  # release stages the writer will not take
                        try:
                            left = q.get_nowait()
                        except queue.Empty:
                            if not worker.is_alive():
                                break
                            worker.join(0.05)
                            continue
                        if isinstance(left, _Stage):
                            left.close()
                    worker.join()
                if report.loaded:
                    conn.execute("PRAGMA analysis_limit=1000")  # approximate statistics: fast on big stores
                    conn.execute("PRAGMA optimize")
                    conn.execute("PRAGMA busy_timeout=200")  # shrink the WAL unless readers hold it
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            finally:
                conn.close()
        report.seconds = time.perf_counter() - started
        if counter is not None:
            report.bytes_read = counter.bytes
        return report

    def _write_batch(self, conn: sqlite3.Connection, stage: _Stage) -> None:
        """Copy one stage into the store in one transaction."""
        conn.execute("ATTACH ? AS stage", (stage.uri,))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                while True:
                    try:
                        conn.execute(
                            "INSERT INTO logs(id, service, level, trace_id, event_id, message, doc) "
                            "SELECT id, service, level, trace_id, event_id, message, doc FROM stage.batch"
                        )
                        break
                    except sqlite3.IntegrityError:
                        if not self._fix_id_clashes(conn):
                            raise
                conn.execute("INSERT INTO logs_fts(rowid, message, tags) "
                             "SELECT id, message, 's' || hex(service) || ' l' || hex(level) FROM stage.batch")
                minutes, slots, facets = stage.aggregates()
                conn.executemany(_UPSERTS[0], minutes)
                conn.executemany(_UPSERTS[1], slots)
                conn.executemany(_UPSERTS[2], facets)
                conn.execute("UPDATE meta SET value=? WHERE key='next_seq'", (stage.next_seq,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DETACH stage")

    @staticmethod
    def _fix_id_clashes(conn: sqlite3.Connection) -> int:
        """Give batch rows whose id (same ms, same seq) is already stored a free seq;
        return how many there were."""
        clashes = [r[0] for r in conn.execute(
            "SELECT b.id FROM stage.batch b WHERE EXISTS (SELECT 1 FROM main.logs l WHERE l.id = b.id)"
        )]
        for old in clashes:
            base = old & ~SEQ_MASK
            for step in range(1, SEQ_MASK + 1):
                new = base | ((old + step * 7919) & SEQ_MASK)
                taken = conn.execute(
                    "SELECT 1 FROM main.logs WHERE id=? UNION ALL SELECT 1 FROM stage.batch WHERE id=?", (new, new)
                ).fetchone()
                if not taken:
                    conn.execute("UPDATE stage.batch SET id=? WHERE id=?", (new, old))
                    break
            else:  # pragma: no cover - 2^20 lines in one millisecond
                raise OpsError("More than 1,048,576 log lines share one millisecond.", "split the load.")
        return len(clashes)

    def reset(self) -> None:
        """Delete every stored line (for re-seeding the sandbox); the file stays."""
        with self._write_lock:
            conn = self._open(write=True)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO logs_fts(logs_fts) VALUES('delete-all')")
                for table in ("logs", "rollup_1m", "rollup_15m", "facets"):
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

    # ---------------------------------------------------------------- facts

    def exists(self) -> bool:
        """True when the store file exists (it may still be empty)."""
        return self.path.exists()

    def _facet(self, kind: str) -> dict[str, int]:
        return dict(self._read(lambda c: c.execute(
            "SELECT value, n FROM facets WHERE kind=? AND n > 0 ORDER BY n DESC, value", (kind,)
        ).fetchall()))

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """Known services and known levels with their line counts (one snapshot)."""
        rows = self._read(lambda c: c.execute(
            "SELECT kind, value, n FROM facets WHERE n > 0 ORDER BY n DESC, value").fetchall())
        return ({v: n for k, v, n in rows if k == "service"}, {v: n for k, v, n in rows if k == "level"})

    def services(self) -> dict[str, int]:
        """Known services with their line counts, most lines first."""
        return self._facet("service")

    def levels(self) -> dict[str, int]:
        """Known levels with their line counts, most lines first."""
        return self._facet("level")

    def count(self) -> int:
        """All stored lines."""
        return int(self._read(lambda c: c.execute("SELECT coalesce(sum(n), 0) FROM facets WHERE kind='level'").fetchone()[0]))

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """The first and last stored timestamps, or None when the store is empty."""
        lo, hi = self._bounds_ms()
        if lo is None:
            return None
        return ms_to_datetime(lo), ms_to_datetime(hi)

    def _bounds_ms(self) -> tuple[int | None, int | None]:
        row = self._read(lambda c: (
            c.execute("SELECT min(id) FROM logs").fetchone()[0], c.execute("SELECT max(id) FROM logs").fetchone()[0]
        ))
        if row[0] is None:
            return None, None
        return row[0] >> SEQ_BITS, row[1] >> SEQ_BITS

    # ---------------------------------------------------------------- queries

    _COLS = "id, service, level, trace_id, event_id, message"

    @staticmethod
    def _records(rows: Iterable[Sequence[Any]], with_doc: bool) -> list[LogRecord]:
        iso, shift, rec = ms_iso, SEQ_BITS, LogRecord
        if with_doc:
            return [rec(r[0], iso(r[0] >> shift), r[1], r[2], r[5], r[3], r[4], r[6]) for r in rows]
        return [rec(r[0], iso(r[0] >> shift), r[1], r[2], r[5], r[3], r[4]) for r in rows]

    def search(
        self,
        query: str | None = None,
        service: str | None = None,
        level: str | Sequence[str] | None = None,
        trace_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        *,
        include_doc: bool = False,
    ) -> SearchPage:
        """Lines matching every given filter, newest first.

        Args:
            query: FTS5 query over ``message`` (see :func:`fts_query`); None for no text filter.
            service: exact service name.
            level: exact level(s), normalised (``warning`` → ``WARN``).
            trace_id: exact trace id.
            start, end: inclusive time window (either may be None).
            limit: hits per page (at least 1).
            cursor: ``next_cursor`` of the previous page.
            include_doc: also return each line's original JSON.

        Returns:
            A page; ``total`` counts all matches in the window (exact, except full-text
            counts stop at 10,000: then ``total_exact`` is False).

        Raises:
            InvalidInput: malformed full-text query or cursor.
        """
        lo = to_ms(start) << SEQ_BITS if start else 0
        hi = (to_ms(end) << SEQ_BITS) | SEQ_MASK if end else (MAX_TS_MS << SEQ_BITS) | SEQ_MASK
        count_hi = hi
        if cursor:
            try:
                before = int(cursor, 16)
            except ValueError:
                raise InvalidInput(f"Cannot read cursor {cursor!r}.", "pass next_cursor from the previous result unchanged.") from None
            hi = min(hi, before - 1)
        levels = _levels_arg(level)
        limit = max(1, int(limit))
        match = fts_query(query.strip()) if query and query.strip() else None
        with_doc = include_doc
        cols = self._COLS + (", doc" if with_doc else "")

        def run(c: sqlite3.Connection) -> SearchPage:
            filters, params = [], []
            if service is not None:
                filters.append("service = ?")
                params.append(service)
            if levels:
                filters.append(f"level IN ({','.join('?' * len(levels))})")
                params += levels
            if trace_id is not None:  # a trace is small: fetch it, then page in Python
                sql = f"SELECT {cols} FROM logs WHERE trace_id = ? AND id BETWEEN ? AND ?"
                args: list[Any] = [trace_id, lo, count_hi]
                for f in filters:
                    sql += " AND " + f
                args += params
                if match:
                    sql += " AND EXISTS (SELECT 1 FROM logs_fts WHERE logs_fts MATCH ? AND rowid = logs.id)"
                    args.append(f"message : ({match})")
                rows = c.execute(sql + " ORDER BY id DESC LIMIT ?", args + [COUNT_CAP + 1]).fetchall()
                total, exact = min(len(rows), COUNT_CAP), len(rows) <= COUNT_CAP
                rows = [r for r in rows if r[0] <= hi]
                hits, more = rows[:limit], len(rows) > limit
                return SearchPage(self._records(hits, with_doc), total, exact, f"{hits[-1][0]:x}" if more else None)
            if match:
                # Service and level filters are tag terms in the same FTS query, so FTS5
                # intersects doclists instead of checking rows; range terms only when there
                # is a window, so FTS5 walks the doclists alone.
                full = f"message : ({match})" + _tag_query(service, levels)

                def where(top: int | None) -> tuple[str, list[Any]]:
                    terms, targs = ["logs_fts MATCH ?"], [full]
                    if start is not None:
                        terms.append("f.rowid >= ?")
                        targs.append(lo)
                    if top is not None:
                        terms.append("f.rowid <= ?")
                        targs.append(top)
                    return " AND ".join(terms), targs

                lcols = ", ".join("l." + x.strip() for x in cols.split(","))
                hit_where, hit_args = where(hi if (end is not None or cursor) else None)
                rows = c.execute(
                    f"SELECT {lcols} FROM logs_fts f CROSS JOIN logs l ON l.id = f.rowid WHERE {hit_where} "
                    "ORDER BY f.rowid DESC LIMIT ?", hit_args + [limit + 1]
                ).fetchall()
                count_where, count_args = where(count_hi if end is not None else None)
                total = c.execute(f"SELECT count(*) FROM (SELECT 1 FROM logs_fts f WHERE {count_where} LIMIT ?)",
                                  count_args + [COUNT_CAP + 1]).fetchone()[0]
                exact = total <= COUNT_CAP
                total = min(total, COUNT_CAP)
            else:
                rows = self._filtered(c, service, levels, lo, hi, limit + 1, cols)
                total = self._exact_count(c, service, levels, lo >> SEQ_BITS, count_hi >> SEQ_BITS)
                exact = True
            hits, more = rows[:limit], len(rows) > limit
            return SearchPage(self._records(hits, with_doc), total, exact, f"{hits[-1][0]:x}" if more else None)

        return self._read(run, fts=query)

    def _filtered(
        self, c: sqlite3.Connection, service: str | None, levels: list[str] | None, lo: int, hi: int, k: int, cols: str
    ) -> list[Any]:
        """Newest ``k`` rows by service/levels in [lo, hi] (rowids), via index range scans."""
        if service is None and not levels:
            return c.execute(f"SELECT {cols} FROM logs WHERE id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?", (lo, hi, k)).fetchall()
        if service is not None and not levels:
            levels = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
        rows: list[Any] = []
        for lv in levels or []:
            if service is not None:
                sql = f"SELECT {cols} FROM logs INDEXED BY logs_service_level WHERE service=? AND level=? AND id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?"
                rows += c.execute(sql, (service, lv, lo, hi, k)).fetchall()
            else:
                sql = f"SELECT {cols} FROM logs INDEXED BY logs_level WHERE level=? AND id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?"
                rows += c.execute(sql, (lv, lo, hi, k)).fetchall()
        if len(levels or []) > 1:
            rows.sort(key=lambda r: r[0], reverse=True)
        return rows[:k]

    def _exact_count(self, c: sqlite3.Connection, service: str | None, levels: list[str] | None, lo_ms: int, hi_ms: int) -> int:
        return sum(n for _, _, n in self._bucket_counts(c, lo_ms, hi_ms, _ONE_BUCKET_MS, "total", service, levels))

    @staticmethod
    def _bucket_counts(
        c: sqlite3.Connection, lo_ms: int, hi_ms: int, interval_ms: int, group_by: str,
        service: str | None, levels: list[str] | None,
    ) -> list[tuple[int, str, int]]:
        """Counts as (bucket start ms, group, n) rows for [lo_ms, hi_ms], buckets aligned to
        the epoch; a (bucket, group) may come in several rows, to be summed.

        Whole 15-minute slots and minutes inside the window come from the rollups (when
        the interval is a multiple of them); only the ragged edges (under a minute each)
        are counted from the lines, so the cost does not grow with the number of lines.
        One statement (a UNION ALL of the parts) answers it.
        """
        if hi_ms < lo_ms:
            return []
        col = {"service": "service", "level": "level"}.get(group_by, "'*'")
        # The rollup rows to read: the filter's values, every value of the grouped column,
        # or the '*' sums.
        if service is not None:
            svcs = [service]
        elif group_by == "service":
            svcs = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='service'")]
        else:
            svcs = ["*"]
        if levels:
            lvls = list(levels)
        elif group_by == "level":
            lvls = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
        else:
            lvls = ["*"]
        parts: list[str] = []
        args: list[Any] = []
        line_filter = ""
        line_args: list[Any] = []
        if service is not None:
            line_filter += " AND service = ?"
            line_args.append(service)
        if levels:
            line_filter += f" AND level IN ({','.join('?' * len(levels))})"
            line_args += levels
        roll_filter = (f"service IN ({','.join('?' * len(svcs))}) AND level IN ({','.join('?' * len(lvls))})")

        def raw(a: int, b: int) -> None:  # inclusive ms range, counted from the lines
            if b >= a:
                parts.append(f"SELECT (id >> {SEQ_BITS}) / {interval_ms} * {interval_ms}, {col}, count(*) FROM logs "
                             f"WHERE id BETWEEN ? AND ?{line_filter} GROUP BY 1, 2")
                args.extend([a << SEQ_BITS, (b << SEQ_BITS) | SEQ_MASK, *line_args])

        def rolled(table: str, unit: str, unit_ms: int, a: int, b: int) -> None:  # units [a, b)
            if b > a:
                parts.append(f"SELECT {unit} * {unit_ms} / {interval_ms} * {interval_ms}, {col}, n FROM {table} "
                             f"WHERE {roll_filter} AND {unit} >= ? AND {unit} < ?")  # summed below
                args.extend([*svcs, *lvls, a, b])

        m0 = -(-lo_ms // MINUTE_MS)  # first whole minute in the window
        m1 = (hi_ms + 1) // MINUTE_MS  # minutes before m1 end inside the window
        per = COARSE_MS // MINUTE_MS
        if interval_ms % MINUTE_MS or m1 <= m0:
            raw(lo_ms, hi_ms)
        else:
            raw(lo_ms, m0 * MINUTE_MS - 1)
            raw(m1 * MINUTE_MS, hi_ms)
            s0, s1 = -(-m0 // per), m1 // per
            if interval_ms % COARSE_MS == 0 and s1 > s0:
                rolled("rollup_1m", "minute", MINUTE_MS, m0, s0 * per)
                rolled("rollup_15m", "slot", COARSE_MS, s0, s1)
                rolled("rollup_1m", "minute", MINUTE_MS, s1 * per, m1)
            else:
                rolled("rollup_1m", "minute", MINUTE_MS, m0, m1)
        if not parts:
            return []
        return c.execute(" UNION ALL ".join(parts), args).fetchall()

    def get_trace(self, trace_id: str, *, limit: int = 1000, include_doc: bool = False) -> TraceLines:
        """Every line of one trace (exact id), oldest first, at most ``limit``.

        Raises:
            NotFound: no line has this trace id; the hint lists ids sharing its first
                8 characters, if any.
        """
        cols = self._COLS + (", doc" if include_doc else "")

        def run(c: sqlite3.Connection) -> TraceLines | None:
            tid = trace_id
            rows = c.execute(f"SELECT {cols} FROM logs WHERE trace_id = ? ORDER BY id LIMIT ?", (tid, limit + 1)).fetchall()
            if not rows:
                for alt in dict.fromkeys([tid.strip(), tid.strip().lower()]):
                    if alt == tid:
                        continue
                    rows = c.execute(f"SELECT {cols} FROM logs WHERE trace_id = ? ORDER BY id LIMIT ?", (alt, limit + 1)).fetchall()
                    if rows:
                        tid = alt
                        break
            if not rows:
                return None
            recs = self._records(rows[:limit], include_doc)
            if len(rows) <= limit:  # the whole trace is here: derive the rest from it
                services = list(dict.fromkeys(r.service for r in recs))
                err = next((r for r in recs if r.level in ERROR_LEVELS), None)
                return TraceLines(tid, recs, len(recs), services, err)
            count = c.execute("SELECT count(*) FROM logs WHERE trace_id = ?", (tid,)).fetchone()[0]
            services = [r[0] for r in c.execute(
                "SELECT service, min(id) FROM logs WHERE trace_id = ? GROUP BY service ORDER BY 2", (tid,))]
            lv = ",".join("?" * len(ERROR_LEVELS))
            first = c.execute(
                f"SELECT {cols} FROM logs WHERE trace_id = ? AND level IN ({lv}) ORDER BY id LIMIT 1", (tid, *ERROR_LEVELS)
            ).fetchall()
            return TraceLines(tid, recs, count, services, self._records(first, include_doc)[0] if first else None)

        found = self._read(run)
        if found is None:
            prefix = trace_id.strip()[:8]
            near = []
            if len(prefix) == 8:
                near = [r[0] for r in self._read(lambda c: c.execute(
                    "SELECT DISTINCT trace_id FROM logs WHERE trace_id >= ? AND trace_id < ? LIMIT 5",
                    (prefix, prefix + "\U0010ffff")).fetchall())]
            hint = ("traces with the same prefix: " + ", ".join(near)) if near else \
                "check the id; search_logs with a query finds trace ids in messages."
            raise NotFound(f"No log lines with trace_id {trace_id!r}.", hint)
        return found

    def last_errors(self, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """For each trace id that has one, its last ERROR (or CRITICAL/FATAL) line, in one query.

        Returns ``{trace_id: {"timestamp", "service", "level", "message", "event_id",
        "errors"}}`` where ``errors`` is the trace's number of error lines; traces
        without errors (or unknown) are absent.
        """
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        lv = ",".join("?" * len(ERROR_LEVELS))
        sql = (f"SELECT l.trace_id, max(l.id), l.service, l.level, l.message, l.event_id, count(*) "
               f"FROM json_each(?) j CROSS JOIN logs l INDEXED BY logs_trace ON l.trace_id = j.value "
               f"WHERE l.level IN ({lv}) GROUP BY l.trace_id")
        rows = self._read(lambda c: c.execute(sql, (json.dumps(ids), *ERROR_LEVELS)).fetchall())
        return {
            r[0]: {"timestamp": ms_iso(r[1] >> SEQ_BITS), "service": r[2], "level": r[3], "message": r[4],
                   "event_id": r[5], "errors": r[6]}
            for r in rows
        }

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """For each trace id, its ERROR/CRITICAL/FATAL lines oldest first (at most
        ``per_trace``), in one query: ``{trace_id: [{"timestamp", "service", "level",
        "message", "event_id"}]}``. Traces without errors (or unknown) are absent."""
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        lv = ",".join("?" * len(ERROR_LEVELS))
        sql = (f"SELECT trace_id, id, service, level, message, event_id FROM ("
               f" SELECT l.trace_id, l.id, l.service, l.level, l.message, l.event_id,"
               f"  row_number() OVER (PARTITION BY l.trace_id ORDER BY l.id) AS k"
               f" FROM json_each(?) j CROSS JOIN logs l INDEXED BY logs_trace ON l.trace_id = j.value"
               f" WHERE l.level IN ({lv})) WHERE k <= ? ORDER BY trace_id, id")
        rows = self._read(lambda c: c.execute(sql, (json.dumps(ids), *ERROR_LEVELS, per_trace)).fetchall())
        out: dict[str, list[dict[str, Any]]] = {}
        for tid, rid, service, level, message, event in rows:
            out.setdefault(tid, []).append({"timestamp": ms_iso(rid >> SEQ_BITS), "service": service, "level": level,
                                            "message": message, "event_id": event})
        return out

    def stats(
        self,
        start: datetime,
        end: datetime,
        group_by: str = "level",
        interval_seconds: float = 300,
        *,
        service: str | None = None,
        level: str | Sequence[str] | None = None,
    ) -> Stats:
        """Line counts per group (``level`` or ``service``) per time bucket in [start, end].

        Buckets are ``interval_seconds`` wide and aligned to the epoch (5-minute buckets
        start at :00, :05, ...); the first and last are clipped to the window.
        Whole minutes come from the rollup tables, so the cost does not grow with the
        number of lines.

        Raises:
            InvalidInput: unknown ``group_by`` or a non-positive interval.
        """
        if group_by not in ("level", "service"):
            raise InvalidInput(f"Cannot group by {group_by!r}.", "use group_by='level' or group_by='service'.")
        interval_ms = int(round(interval_seconds * 1000))
        if interval_ms <= 0:
            raise InvalidInput(f"interval must be positive, got {interval_seconds!r} s.", "use e.g. '5m' or 300.")
        lo_ms, hi_ms = to_ms(start), to_ms(end)
        levels = _levels_arg(level)
        first_bucket = lo_ms // interval_ms * interval_ms
        nb = max(1, (hi_ms // interval_ms * interval_ms - first_bucket) // interval_ms + 1)

        def run(c: sqlite3.Connection) -> Stats:
            series: dict[str, list[int]] = {}
            for bucket, key, n in self._bucket_counts(c, lo_ms, hi_ms, interval_ms, group_by, service, levels):
                vals = series.get(key)
                if vals is None:
                    vals = series[key] = [0] * nb
                vals[(bucket - first_bucket) // interval_ms] += n
            spans = {}
            for key, vals in series.items():
                if any(vals):
                    f = next(i for i, v in enumerate(vals) if v)
                    last = max(i for i, v in enumerate(vals) if v)
                    spans[key] = (max(lo_ms, first_bucket + f * interval_ms),
                                  min(hi_ms, first_bucket + (f + 1) * interval_ms - 1),
                                  max(lo_ms, first_bucket + last * interval_ms),
                                  min(hi_ms, first_bucket + (last + 1) * interval_ms - 1))
            edges = self._edges(c, group_by, spans, service, levels)
            groups = [StatsGroup(key, sum(series[key]), series[key], *edges.get(key, (None, None))) for key in spans]
            groups.sort(key=lambda g: (-g.total, g.key))
            return Stats(lo_ms, hi_ms, interval_ms, group_by,
                         [first_bucket + i * interval_ms for i in range(nb)], groups, sum(g.total for g in groups))

        return self._read(run)

    @staticmethod
    def _edges(c: sqlite3.Connection, group_by: str, spans: dict[str, tuple[int, int, int, int]],
               service: str | None, levels: list[str] | None) -> dict[str, tuple[int | None, int | None]]:
        """First and last timestamp of each group, given the buckets they fall in: one
        statement of index seeks (per group and level, min in the first bucket, max in the last)."""
        if not spans:
            return {}
        all_levels = levels or [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
        with_service = group_by == "service" or service is not None
        rows: list[Any] = []
        for key, (fa, fb, la, lb) in spans.items():
            svc = key if group_by == "service" else service
            for lv in ([key] if group_by == "level" else all_levels):
                rows += [key, svc, lv, fa << SEQ_BITS, (fb << SEQ_BITS) | SEQ_MASK,
                         la << SEQ_BITS, (lb << SEQ_BITS) | SEQ_MASK]
        if with_service:
            src, cond = "logs INDEXED BY logs_service_level", "service = v.svc AND level = v.lvl"
        else:
            src, cond = "logs INDEXED BY logs_level", "level = v.lvl"
        values = ",".join(["(?,?,?,?,?,?,?)"] * (len(rows) // 7))
        sql = (f"WITH v(k, svc, lvl, fa, fb, la, lb) AS (VALUES {values}) "
               f"SELECT k, min((SELECT min(id) FROM {src} WHERE {cond} AND id BETWEEN v.fa AND v.fb)), "
               f"max((SELECT max(id) FROM {src} WHERE {cond} AND id BETWEEN v.la AND v.lb)) FROM v GROUP BY k")
        return {k: (f >> SEQ_BITS if f is not None else None, m >> SEQ_BITS if m is not None else None)
                for k, f, m in c.execute(sql, rows)}


def _levels_arg(level: str | Sequence[str] | None) -> list[str] | None:
    if level is None:
        return None
    items = level.split(",") if isinstance(level, str) else list(level)
    out = [normalize_level(x) for x in items if str(x).strip()]
    return list(dict.fromkeys(out)) or None


class _Stage:
    """One parsed batch in a private in-memory database the writer ATTACHes and copies.

    Named shared-cache memory databases live while a connection holds them open; the
    parse thread fills one with its own connection and the writer closes it after use.
    """

    def __init__(self, rows: list[tuple[Any, ...]], counts: dict[tuple[int, str, str], int], read: int,
                 next_seq: int) -> None:
        self.uri = f"file:opsmcp-stage-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self.rows, self.counts, self.read, self.next_seq = len(rows), counts, read, next_seq
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.uri, uri=True, isolation_level=None, check_same_thread=False)
        self._conn.execute(_STAGE_TABLE)
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT INTO batch VALUES (?,?,?,?,?,?,?)", rows)
        self._conn.execute("COMMIT")

    @classmethod
    def empty(cls, read: int, next_seq: int) -> _Stage:
        stage = cls.__new__(cls)
        stage.uri, stage.rows, stage.counts, stage.read, stage.next_seq, stage._conn = "", 0, {}, read, next_seq, None
        return stage

    def aggregates(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows for rollup_1m, rollup_15m (with the '*' sums) and facets from the batch's
        per-minute counts."""
        per = COARSE_MS // MINUTE_MS
        minutes: dict[tuple[str, str, int], int] = {}
        slots: dict[tuple[str, str, int], int] = {}
        services: dict[str, int] = {}
        levels: dict[str, int] = {}
        for (minute, service, level), n in self.counts.items():
            slot = minute // per
            for svc, lvl in ((service, level), ("*", level), (service, "*"), ("*", "*")):
                k = (svc, lvl, minute)
                minutes[k] = minutes.get(k, 0) + n
                k = (svc, lvl, slot)
                slots[k] = slots.get(k, 0) + n
            services[service] = services.get(service, 0) + n
            levels[level] = levels.get(level, 0) + n
        return (
            [(*k, n) for k, n in minutes.items()],
            [(*k, n) for k, n in slots.items()],
            [("service", k, n) for k, n in services.items()] + [("level", k, n) for k, n in levels.items()],
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _ByteCounter:
    """Opens the inputs of a load lazily and tells how many bytes were read so far.

    Files are read as UTF-8 text by the C text layer (no per-line Python work); bytes
    that are not UTF-8 become lone surrogates, which :func:`parse_batch` reports as a
    bad line instead of aborting the load.
    """

    def __init__(self) -> None:
        self._done = 0
        self._current: Any = None

    @property
    def bytes(self) -> int:
        cur = self._current
        try:
            return self._done + (cur.buffer.tell() if cur is not None else 0)
        except (OSError, ValueError):  # a pipe (stdin) cannot tell
            return self._done

    def open(self, name: str) -> Iterator[str]:
        if name == "-":
            fh = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="\n")
        else:
            fh = open(name, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 20)  # noqa: SIM115
        self._current = fh
        try:
            yield from fh
        finally:
            self._current = None
            try:
                self._done += fh.buffer.tell()
            except (OSError, ValueError):
                pass
            if name == "-":
                fh.detach()
            else:
                fh.close()
