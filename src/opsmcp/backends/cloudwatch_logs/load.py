"""``opsmcp logs load --to cloudwatch``: JSON Lines into a CloudWatch Logs group.

Each line is read with the embedded store's field names (:func:`~opsmcp.backends.jsonline.documents`)
and stored as a compact JSON message with the configured names, its time as the event's
timestamp. PutLogEvents' rules are kept: a batch holds at most :data:`MAX_BATCH_EVENTS`
events and :data:`MAX_BATCH_BYTES` (message bytes + 26 each), its events in time order and
within 24 hours of each other; events older than 14 days or more than 2 hours ahead are
refused by the service and counted as bad lines (sequence tokens are no longer needed).

Idempotent: each file goes to its own stream, ``opsmcp-<hash of its lines>``; what that
stream already holds (an earlier or interrupted load) is read back first and skipped, so
loading a file twice stores each line once and an interrupted load resumes. PutLogEvents
is not idempotent, so it is sent once per batch (no retry); after a failure, run the same
load again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opsmcp.backends.aws import AwsClients, aws_call_sync
from opsmcp.backends.cloudwatch_logs.query import Fields
from opsmcp.backends.jsonline import documents, progress_line
from opsmcp.backends.logstore.ingest import ByteCounter
from opsmcp.backends.logstore.parser import IngestReport
from opsmcp.errors import OpsError

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_BATCH_SPAN_MS = 24 * 3_600_000 - 1
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
DEFAULT_GROUP = "/opsmcp/logs"


def default_group(patterns: Sequence[str]) -> str:
    """Where a load goes by default: the first configured group that is a name, not a prefix."""
    return next((p for p in patterns if not p.endswith("*")), DEFAULT_GROUP)


def batches(events: Sequence[tuple[int, str]]) -> list[list[dict[str, Any]]]:
    """``(timestamp ms, message)`` events, sorted, cut into PutLogEvents batches that keep
    its count, size and 24-hour-span limits."""
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = 0
    for ts, msg in sorted(events):
        n = len(msg.encode()) + EVENT_OVERHEAD
        if cur and (len(cur) >= MAX_BATCH_EVENTS or size + n > MAX_BATCH_BYTES or ts - cur[0]["timestamp"]
                    > MAX_BATCH_SPAN_MS):
            out.append(cur)
            cur, size = [], 0
        cur.append({"timestamp": ts, "message": msg})
        size += n
    if cur:
        out.append(cur)
    return out


def _stored(logs: Any, clients: AwsClients, group: str, stream: str) -> set[tuple[int, str]]:
    """What ``stream`` already holds, as (timestamp, message) pairs."""
    seen: set[tuple[int, str]] = set()
    token = None
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        resp = aws_call_sync(clients, f"read back stream {stream}", logs.get_log_events, **kwargs)
        events = resp.get("events", [])
        seen.update((int(e["timestamp"]), str(e["message"])) for e in events)
        nxt = resp.get("nextForwardToken")
        if not events or nxt == token:
            return seen
        token = nxt


def load_jsonl(clients: AwsClients, group: str, paths: Sequence[str | Path], *, fields: Fields | None = None,
               on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Load JSON Lines files (``-`` = stdin) into ``group`` (created if missing), one stream
    per file; bad and refused lines are counted with their numbers and never stop the load.

    Raises:
        NotFound: a file does not exist (nothing is loaded).
        OpsError: the group or stream cannot be created, or a batch fails (run it again:
            what was stored is skipped).
    """
    f = fields or Fields()
    names = [str(p) for p in paths]
    report = IngestReport(sources=names)
    started = time.perf_counter()
    logs = clients.client("logs")
    once = clients.client("logs", retries=False)
    counter = ByteCounter()
    mapping = {"level": f.level, "service": f.service, "message": f.message, "trace_id": f.trace_id,
               "event_id": f.event_id}
    try:
        aws_call_sync(clients, f"create log group {group}", logs.create_log_group, logGroupName=group)
    except OpsError as exc:
        if "ResourceAlreadyExists" not in str(exc):
            raise
    for name in names:
        events: list[tuple[int, str]] = []
        for ms, _, doc in documents([name], report, counter, mapping):
            events.append((ms, json.dumps(doc, separators=(",", ":"), ensure_ascii=False)))
        digest = hashlib.sha256("\n".join(f"{t}\t{m}" for t, m in sorted(events)).encode("utf-8", "replace"))
        stream = f"opsmcp-{digest.hexdigest()[:24]}"
        try:
            aws_call_sync(clients, f"create log stream {stream}", logs.create_log_stream, logGroupName=group,
                          logStreamName=stream)
            stored: set[tuple[int, str]] = set()
        except OpsError as exc:
            if "ResourceAlreadyExists" not in str(exc):
                raise
            stored = _stored(logs, clients, group, stream)
        todo = []
        for ts, msg in events:
            if len(msg.encode()) > MAX_EVENT_BYTES:
                report.add_bad(name, 0, f"event of {len(msg.encode()):,} bytes is over CloudWatch's 256 KB limit")
            elif (ts, msg) in stored:
                report.skipped += 1
            else:
                todo.append((ts, msg))
        for batch in batches(todo):
            resp = aws_call_sync(clients, f"put {len(batch)} events into {group}", once.put_log_events,
                                 logGroupName=group, logStreamName=stream, logEvents=batch)
            rejected = resp.get("rejectedLogEventsInfo") or {}
            refused = _refused(rejected, len(batch))
            for i in sorted(refused):
                report.add_bad(name, 0, f"refused by CloudWatch ({refused[i]}): event at {batch[i]['timestamp']}")
            report.loaded += len(batch) - len(refused)
            if on_progress is not None:
                on_progress(report.loaded)
    report.seconds = time.perf_counter() - started
    report.bytes_read = counter.bytes
    return report


def _refused(info: dict[str, Any], n: int) -> dict[int, str]:
    """Indexes PutLogEvents refused (``rejectedLogEventsInfo``) and why."""
    out: dict[int, str] = {}
    if "tooNewLogEventStartIndex" in info:
        out.update({i: "more than 2 hours ahead" for i in range(int(info["tooNewLogEventStartIndex"]), n)})
    if "tooOldLogEventEndIndex" in info:
        out.update({i: "older than 14 days" for i in range(0, int(info["tooOldLogEventEndIndex"]) + 1)})
    if "expiredLogEventEndIndex" in info:
        out.update({i: "older than the group's retention" for i in range(0, int(info["expiredLogEventEndIndex"]) + 1)})
    return out


def load_with_settings(settings: Any, paths: Sequence[str | Path], *, group: str | None = None,
                       show_progress: bool = False) -> IngestReport:
    """``opsmcp logs load --to cloudwatch``: load into ``group`` (default: the first named
    group of ``OPSMCP_CLOUDWATCH_LOG_GROUPS``, else ``/opsmcp/logs``) with the configured
    field names; with ``show_progress`` a line count on stderr as batches go out."""
    target = group or default_group(settings.cloudwatch_log_groups)
    with progress_line(f"loading logs into {target}", show_progress) as tick:
        report = load_jsonl(AwsClients(settings), target, paths,
                            fields=Fields.from_overrides(settings.cloudwatch_fields), on_progress=tick)
    report.sources = [*report.sources, f"→ log group {target}"]
    return report
