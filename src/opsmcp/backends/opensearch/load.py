"""``opsmcp logs load --to opensearch``: JSON Lines into an OpenSearch index.

Each line is read with the embedded store's field names and defaults
(:func:`~opsmcp.backends.logstore.parser.standard_fields`), written with the configured
field names (timestamp as ISO-8601 UTC with milliseconds, level normalised), and sent with
``helpers.streaming_bulk`` (429s retried with back-off). A document's ``_id`` is a hash of
its line, so loading the same file twice stores each line once. A missing index is
created with :data:`INDEX_TEMPLATE`'s mapping (ids as ``keyword``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from opsmcp.backends.jsonline import parse_document, progress_line
from opsmcp.backends.logbackend import ms_iso
from opsmcp.backends.logstore.ingest import ByteCounter
from opsmcp.backends.logstore.parser import IngestReport
from opsmcp.backends.opensearch.query import Fields
from opsmcp.errors import NotFound, OpsError


def index_mapping(f: Fields) -> dict[str, Any]:
    """The recommended mapping: time as ``date``, message as ``text``, everything matched
    exactly (level, service, trace and event ids) as ``keyword``."""
    return {"properties": {
        f.timestamp: {"type": "date"},
        f.level: {"type": "keyword"},
        f.service: {"type": "keyword"},
        f.message: {"type": "text"},
        f.trace_id: {"type": "keyword"},
        f.event_id: {"type": "keyword"},
    }}


INDEX_TEMPLATE = {"index_patterns": ["cwl*"], "template": {"mappings": index_mapping(Fields())}}


def default_index(pattern: str) -> str:
    """A concrete index name for a pattern: ``cwl*`` → ``cwl-opsmcp``; a plain name as is."""
    if "*" not in pattern and "," not in pattern:
        return pattern
    stem = pattern.split(",")[0].replace("*", "").rstrip("-_") or "logs"
    return f"{stem}-opsmcp"


def to_document(line: str, f: Fields) -> dict[str, Any]:
    """One JSON Lines line as the document to index.

    Raises:
        ValueError: not a JSON object, no message, a bad timestamp, or invalid UTF-8 (the reason).
    """
    ms, service, level, message, trace, event, doc = parse_document(line)
    doc.update({f.timestamp: ms_iso(ms), f.level: level, f.service: service, f.message: message})
    if trace is not None:
        doc[f.trace_id] = trace
    if event is not None:
        doc[f.event_id] = event
    return doc


def load_jsonl(
    client: Any, index: str, paths: Sequence[str | Path], *, fields: Fields | None = None,
    chunk_size: int = 2_000, on_progress: Callable[[int], None] | None = None, create: bool = True,
) -> IngestReport:
    """Bulk-load JSON Lines files (``-`` = stdin) into ``index``; bad lines are counted with
    their numbers and never stop the load.

    Raises:
        NotFound: a file does not exist (nothing is loaded).
        OpsError: the index cannot be created, or the bulk requests fail.
    """
    from opensearchpy import helpers

    f = fields or Fields()
    names = [str(p) for p in paths]
    for name in names:
        if name != "-" and not Path(name).is_file():
            raise NotFound(f"No such log file: {name}.", "pass JSON Lines files, or - for stdin.")
    started = time.perf_counter()
    report = IngestReport(sources=names)
    try:
        if create and not client.indices.exists(index=index):
            client.indices.create(index=index, body={"mappings": index_mapping(f)})
    except Exception as exc:
        from opsmcp.backends.opensearch.client import map_error

        raise map_error(exc, url="", index=index, what=f"creating index {index}") from None
    counter = ByteCounter()

    def actions() -> Iterator[dict[str, Any]]:
        read = 0
        for name in names:
            lines: Iterable[str] = counter.open(name)
            for no, line in enumerate(lines, 1):
                read += 1
                if not line.strip():
                    report.blank += 1
                    continue
                try:
                    doc = to_document(line, f)
                except (ValueError, OverflowError, RecursionError) as exc:
                    report.add_bad(name, no, str(exc) or type(exc).__name__)
                    continue
                doc_id = hashlib.sha256(line.rstrip("\r\n").encode("utf-8", "replace")).hexdigest()
                yield {"_index": index, "_id": doc_id, "_source": doc}
                if on_progress is not None and read % chunk_size == 0:
                    on_progress(read)

    try:
        for ok, item in helpers.streaming_bulk(client, actions(), chunk_size=chunk_size, raise_on_error=False,
                                               max_retries=3, initial_backoff=1, max_backoff=8):
            if ok:
                report.loaded += 1
            else:
                info: Any = next(iter(item.values()), {})
                error = info.get("error") if isinstance(info, dict) else info
                reason = error.get("reason", str(error)) if isinstance(error, dict) else str(error)
                report.add_bad(index, 0, f"rejected by OpenSearch: {reason}")
        client.indices.refresh(index=index)
    except OpsError:
        raise
    except Exception as exc:
        from opsmcp.backends.opensearch.client import map_error

        raise map_error(exc, url="", index=index, what=f"bulk load into {index}") from None
    report.seconds = time.perf_counter() - started
    report.bytes_read = counter.bytes
    return report


def load_with_settings(settings: Any, paths: Sequence[str | Path], *, index: str | None = None,
                       show_progress: bool = False) -> IngestReport:
    """``opsmcp logs load --to opensearch``: load into ``index`` (default: a concrete name
    for ``OPSMCP_OPENSEARCH_INDEX``, see :func:`default_index`) with the configured client
    and field names; with ``show_progress`` a line count on stderr as batches go out."""
    from opsmcp.backends.opensearch.client import make_client

    client = make_client(settings)
    target = index or default_index(settings.opensearch_index)
    try:
        with progress_line(f"loading logs into {target}", show_progress) as tick:
            report = load_jsonl(client, target, paths, fields=Fields.from_overrides(settings.opensearch_fields),
                                on_progress=tick)
    finally:
        with contextlib.suppress(Exception):
            client.close()
    report.sources = [*report.sources, f"→ index {target}"]
    return report
