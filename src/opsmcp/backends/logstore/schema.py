"""The embedded log store's on-disk layout: tables, indexes and the id layout.

Schema (version 1), designed so that every tool query is an index range scan:

``logs``
    ``id INTEGER PRIMARY KEY`` is ``(timestamp_ms << 20) | seq``: the rowid *is* the time
    index. Time windows are rowid ranges, "newest first" is a reverse rowid scan, and the
    FTS5 index (keyed by the same rowid) can return matches newest first and inside a
    window without touching the table. ``ts`` is a virtual column (``id >> 20``, epoch
    milliseconds) for hand-written SQL. ``seq`` (20 bits) keeps ids unique within one
    millisecond. ``service``, ``level``, ``trace_id`` and ``event_id`` are plain TEXT
    compared with ``=`` (never tokenized: a trace id matches that trace only);
    ``message`` is the text FTS5 indexes; ``doc`` holds the line's other JSON fields (the
    original line minus the indexed ones; '' when there are none; stores written before
    this change hold the whole line, which reads the same).
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
``loads``
    Per loaded file (keyed by a SHA-256 of its first bytes), how many of its lines are
    stored, updated in each batch's transaction: a re-run of an interrupted (or finished)
    load continues after them instead of storing lines twice.

Indexes: ``(trace_id)``, ``(service, level)`` and ``(level)``; each implicitly ends in
the rowid, so they are also ordered by time within a value.

"""

from __future__ import annotations

SCHEMA_VERSION = 1
SEQ_BITS = 20
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_TS_MS = (1 << (63 - SEQ_BITS)) - 1  # ~ year 2248
MINUTE_MS = 60_000
COARSE_MS = 15 * MINUTE_MS
READER_MMAP_BYTES = 256 << 20  # readers map the file: fewer copies on index and FTS scans


def row_id(ts_ms: int, seq: int) -> int:
    """The ``logs`` rowid of a line at ``ts_ms`` with sequence number ``seq``."""
    return (ts_ms << SEQ_BITS) | (seq & SEQ_MASK)


def id_range(lo_ms: int, hi_ms: int) -> tuple[int, int]:
    """The rowids [first, last] of every line in the inclusive millisecond window."""
    return lo_ms << SEQ_BITS, (hi_ms << SEQ_BITS) | SEQ_MASK


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs(
    id INTEGER PRIMARY KEY,            -- (timestamp_ms << {SEQ_BITS}) | seq
    service TEXT NOT NULL,
    level TEXT NOT NULL,
    trace_id TEXT,
    event_id TEXT,
    message TEXT NOT NULL,
    doc TEXT NOT NULL,                 -- the line's other fields (JSON object, or '')
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
CREATE TABLE IF NOT EXISTS loads(      -- resumable loads: a file (by its head) and its lines done
    fingerprint TEXT PRIMARY KEY, head_bytes INTEGER NOT NULL, source TEXT, lines INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('schema_version', {SCHEMA_VERSION}), ('next_seq', 0);
"""

STAGE_TABLES = (
    "CREATE TABLE batch(id INTEGER PRIMARY KEY, service TEXT, level TEXT, trace_id TEXT, event_id TEXT, "
    "message TEXT, doc TEXT)",
    "CREATE TABLE minutes(service TEXT, level TEXT, minute INTEGER, n INTEGER)",
    "CREATE TABLE slots(service TEXT, level TEXT, slot INTEGER, n INTEGER)",
    "CREATE TABLE facets(kind TEXT, value TEXT, n INTEGER)",
)
"""A stage database's tables: the batch's lines, and its rollup and facet rows."""

#: Set-based upserts of a stage's rollup and facet rows into the store, one statement each
#: (``WHERE true`` tells SQLite's parser the ON CONFLICT belongs to the INSERT).
UPSERTS = (
    ("INSERT INTO rollup_1m(service, level, minute, n) SELECT service, level, minute, n FROM stage.minutes "
     "WHERE true ON CONFLICT DO UPDATE SET n = n + excluded.n"),
    ("INSERT INTO rollup_15m(service, level, slot, n) SELECT service, level, slot, n FROM stage.slots "
     "WHERE true ON CONFLICT DO UPDATE SET n = n + excluded.n"),
    ("INSERT INTO facets(kind, value, n) SELECT kind, value, n FROM stage.facets "
     "WHERE true ON CONFLICT DO UPDATE SET n = n + excluded.n"),
)
