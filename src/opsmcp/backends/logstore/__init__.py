"""The embedded log store: one SQLite file with FTS5, the default log backend.

One idea per module:

- :mod:`.schema` — tables, indexes and the id layout (rowid = time << 20 | seq);
- :mod:`.parser` — the pure JSON Lines parser, the ingest hot loop;
- :mod:`.fts` — full-text query building (FTS5 MATCH strings, parse errors);
- :mod:`.ingest` — loading with a parse thread, whole-batch transactions and progress;
- :mod:`.rollup` — rollup arithmetic: per-minute counts in, bucket counts out;
- :mod:`.connection` — opening the file, the read-connection pool, bounded reads;
- :mod:`.store` — :class:`LogStore`, its loads and its queries
  (the :class:`~opsmcp.backends.logbackend.LogBackend` interface).

``from opsmcp.backends.logstore import LogStore`` is the public entry point.
"""

from opsmcp.backends.logbackend import (
    COUNT_CAP,
    ERROR_LEVELS,
    LogRecord,
    SearchPage,
    Stats,
    StatsGroup,
    TraceLines,
    ms_iso,
    ms_to_datetime,
    normalize_level,
    to_ms,
)
from opsmcp.backends.logstore.connection import LOAD_HINT, MAX_IDLE_READERS, QUERY_DEADLINE_S
from opsmcp.backends.logstore.fts import FTS_EXAMPLES, fts_query
from opsmcp.backends.logstore.parser import BadLine, IngestReport, parse_batch, standard_fields
from opsmcp.backends.logstore.schema import MAX_TS_MS, READER_MMAP_BYTES, SCHEMA_VERSION, SEQ_BITS, SEQ_MASK
from opsmcp.backends.logstore.store import LogStore

__all__ = [
    "COUNT_CAP", "ERROR_LEVELS", "FTS_EXAMPLES", "LOAD_HINT", "MAX_IDLE_READERS", "MAX_TS_MS", "QUERY_DEADLINE_S",
    "READER_MMAP_BYTES", "SCHEMA_VERSION", "SEQ_BITS", "SEQ_MASK", "BadLine", "IngestReport", "LogRecord",
    "LogStore", "SearchPage", "Stats", "StatsGroup", "TraceLines", "fts_query", "ms_iso", "ms_to_datetime",
    "normalize_level", "parse_batch", "standard_fields", "to_ms",
]
