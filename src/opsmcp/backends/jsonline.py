"""JSON log lines for the engines that store raw lines (CloudWatch Logs, Loki), both ways.

:func:`read_line` reads one stored line into the tools' fields: a line that is a JSON
object gives its level, service, message, trace and event ids from the configured field
names (dotted names reach into nested objects); any other line is its own message, with
level ``UNKNOWN`` and no ids. :func:`documents` reads JSON Lines files for ``opsmcp logs
load`` into the documents such an engine stores; :func:`progress_line` is the line count the
loaders of ``opsmcp logs load`` show on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsmcp.backends.logbackend import normalize_level
from opsmcp.backends.logstore.ingest import ByteCounter
from opsmcp.backends.logstore.parser import _SURROGATE, IngestReport, standard_fields
from opsmcp.errors import NotFound


@contextlib.contextmanager
def progress_line(what: str, show: bool = True) -> Iterator[Callable[[int], None] | None]:
    """A callback for a loader's ``on_progress`` that rewrites ``<what>: N lines`` on stderr
    (None when not ``show``); the line is ended when the block ends, however it ends."""
    if not show:
        yield None
        return

    def tick(lines: int) -> None:
        print(f"\r{what}: {lines:,} lines", end="", file=sys.stderr, flush=True)

    try:
        yield tick
    finally:
        print(file=sys.stderr)


@dataclass(frozen=True)
class LineFields:
    """What :func:`read_line` found (``doc`` is the raw line when it is a JSON object)."""

    level: str
    service: str | None
    message: str
    trace_id: str | None
    event_id: str | None
    doc: str | None


def _get(doc: dict[str, Any], dotted: str) -> Any:
    if dotted in doc:
        return doc[dotted]
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def read_line(raw: str, *, level: str, message: str, trace_id: str, event_id: str,
              service: str | None = None) -> LineFields:
    """The fields of one raw line, read with these field names (``service=None``: the
    engine knows the service elsewhere, e.g. a Loki stream label)."""
    text = raw.rstrip("\r\n")
    doc = None
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        doc = parsed if isinstance(parsed, dict) else None
    if doc is None:
        return LineFields("UNKNOWN", None, text, None, None, None)
    msg = _text(_get(doc, message)) if message != "@message" else text
    return LineFields(
        level=normalize_level(_get(doc, level)),
        service=_text(_get(doc, service)) if service else None,
        message=msg if msg is not None else text,
        trace_id=_text(_get(doc, trace_id)),
        event_id=_text(_get(doc, event_id)),
        doc=text,
    )


# --------------------------------------------------------------------------- loading files

_TIME_KEYS = ("@timestamp", "timestamp", "time", "ts", "msg", "severity", "svc", "traceId", "eventId")


def parse_document(line: str) -> tuple[int, str, str, str, str | None, str | None, dict[str, Any]]:
    """One JSON Lines line as (epoch ms, service, level, message, trace id, event id, the
    other fields), read with the embedded store's field names and defaults (the fields read
    are removed from the document).

    Raises:
        ValueError: not valid UTF-8, not a JSON object, no message, or a bad timestamp (the reason).
    """
    if not line.isascii() and _SURROGATE.search(line):
        raise ValueError("not valid UTF-8")
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"invalid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object (one object per line expected)")
    ms, service, level, message, trace, event = standard_fields(doc)
    for key in _TIME_KEYS:
        doc.pop(key, None)
    return ms, service, level, message, trace, event, doc


def documents(paths: Sequence[str], report: IngestReport, counter: ByteCounter,
              names: dict[str, str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The JSON Lines files' lines (``-`` = stdin) as ``(epoch ms, line, document)``, read
    with the embedded store's field names and defaults and written with ``names``
    (keys level, service, message, trace_id, event_id → the engine's field names; the
    time is left to the engine). Bad lines are counted in ``report`` with their numbers.

    Raises:
        NotFound: a file does not exist (before anything is read).
    """
    for name in paths:
        if name != "-" and not Path(name).is_file():
            raise NotFound(f"No such log file: {name}.", "pass JSON Lines files, or - for stdin.")
    for name in paths:
        for no, line in enumerate(counter.open(name), 1):
            if not line.strip():
                report.blank += 1
                continue
            try:
                ms, service, level, message, trace, event, doc = parse_document(line)
            except (ValueError, OverflowError, RecursionError) as exc:
                report.add_bad(name, no, str(exc) or type(exc).__name__)
                continue
            doc.update({names.get("level", "level"): level, names.get("service", "service"): service,
                        names.get("message", "message"): message})
            if trace is not None:
                doc[names.get("trace_id", "trace_id")] = trace
            if event is not None:
                doc[names.get("event_id", "event_id")] = event
            yield ms, line.rstrip("\r\n"), doc
