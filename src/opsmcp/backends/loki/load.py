"""``opsmcp logs load --to loki``: JSON Lines pushed to Loki (``POST /loki/api/v1/push``).

Each line is read with the embedded store's field names (:func:`~opsmcp.backends.jsonline.documents`)
and pushed as a compact JSON line with the configured names, its time as the entry's
timestamp, in a stream labelled with its service (``OPSMCP_LOKI_SERVICE_LABEL``) plus the
selector's own ``label="value"`` matchers, so what is loaded is what the tools read.
Batches hold at most :data:`BATCH_ENTRIES` entries and :data:`BATCH_BYTES` bytes. Loki
drops an entry identical to one it holds (same stream, time and line), so loading a file
twice stores each line once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opsmcp.backends.jsonline import documents, progress_line
from opsmcp.backends.logstore.ingest import ByteCounter
from opsmcp.backends.logstore.parser import IngestReport
from opsmcp.backends.loki.client import LokiClient
from opsmcp.backends.loki.logql import Fields
from opsmcp.errors import InvalidInput

BATCH_ENTRIES = 5_000
BATCH_BYTES = 1_000_000
_EQUALS = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*")')


def fixed_labels(selector: str) -> dict[str, str]:
    """The selector's equality matchers (``{env="prod", app=~"x.*"}`` → ``{"env": "prod"}``)."""
    return {name: json.loads(value) for name, value in _EQUALS.findall(selector)
            if not selector[selector.index(name) + len(name):].lstrip().startswith(("=~", "!="))}


def push_body(entries: Sequence[tuple[dict[str, str], int, str]]) -> dict[str, Any]:
    """``(labels, ns, line)`` entries as a push request body, one stream per label set."""
    streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for labels, ns, line in entries:
        streams.setdefault(tuple(sorted(labels.items())), []).append([str(ns), line])
    return {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}


def load_jsonl(client: LokiClient, paths: Sequence[str | Path], *, service_label: str = "service_name",
               labels: dict[str, str] | None = None, fields: Fields | None = None,
               on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Push JSON Lines files (``-`` = stdin) to Loki; bad lines are counted with their
    numbers and never stop the load.

    Raises:
        NotFound: a file does not exist (nothing is loaded).
        OpsError: Loki is unreachable or refuses the push (auth, 5xx).
    """
    f = fields or Fields()
    names = [str(p) for p in paths]
    report = IngestReport(sources=names)
    started = time.perf_counter()
    counter = ByteCounter()
    mapping = {"level": f.level, "message": f.message, "trace_id": f.trace_id, "event_id": f.event_id}
    batch: list[tuple[dict[str, str], int, str]] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        try:
            client.request("POST", "/loki/api/v1/push", f"pushing {len(batch)} lines", json_body=push_body(batch))
            report.loaded += len(batch)
        except InvalidInput as exc:  # Loki stores what it can and says what it refused (too old, too long)
            report.add_bad("loki", 0, f"refused in a batch of {len(batch)}: {exc}")
        if on_progress is not None:
            on_progress(report.loaded)
        batch, size = [], 0

    for ms, _, doc in documents(names, report, counter, mapping):
        service = str(doc.pop("service", "unknown"))
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        batch.append(({**(labels or {}), service_label: service}, ms * 1_000_000, line))
        size += len(line) + 64
        if len(batch) >= BATCH_ENTRIES or size >= BATCH_BYTES:
            flush()
    flush()
    report.seconds = time.perf_counter() - started
    report.bytes_read = counter.bytes
    return report


def load_with_settings(settings: Any, paths: Sequence[str | Path], *, show_progress: bool = False) -> IngestReport:
    """``opsmcp logs load --to loki`` with the configured client, labels and field names."""
    client = LokiClient.from_settings(settings)
    try:
        with progress_line(f"pushing logs to {client.url}", show_progress) as tick:
            report = load_jsonl(client, paths, service_label=settings.loki_service_label,
                                labels=fixed_labels(settings.loki_selector),
                                fields=Fields.from_overrides(settings.loki_fields), on_progress=tick)
    finally:
        client.close()
    report.sources = [*report.sources, f"→ {client.url}"]
    return report
