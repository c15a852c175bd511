"""The audit log: one trail of every write call, with secrets redacted.

Each write tool call (dry runs and previews too) appends two records sharing one
``call_id``: ``phase: "intent"`` before anything acts (if it cannot be written, the call
fails and nothing acts) and ``phase: "outcome"`` afterwards with the outcome, counts and
duration. Records go to a JSON Lines file (default ``<OPSMCP_DATA_DIR>/audit.jsonl``,
fsynced per record) or, for several replicas, to a DynamoDB table (``OPSMCP_AUDIT_TABLE``,
hash key ``call_id``, range key ``phase``).

Long writes also append ``phase: "progress"`` records (the counts so far; the server's
write gate writes one every few progress reports; the DynamoDB table keeps the latest).
On start-up, :func:`mark_interrupted` closes every ``intent`` that has no ``outcome`` and
whose server process is gone with an ``outcome: "interrupted"`` record carrying the last
known progress, so after a kill the trail still says how far the write got.

One record is bounded: string values longer than :data:`MAX_VALUE_CHARS` are cut and
marked, and a record still larger than :data:`MAX_RECORD_BYTES` keeps only its argument
names (:func:`bounded`). A file whose last line was torn by a crash gets a newline before
the next record, so the torn line never swallows it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread

from opsmcp.backends.aws import AwsClients, aws_call, aws_error_code
from opsmcp.calls.identity import caller
from opsmcp.result_size import cap_values, cut_text, json_size
from opsmcp.errors import OpsError
from opsmcp.private import open_private, private_dir
from opsmcp.times import now_iso
from opsmcp.toolsets.base import INJECTED

SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|access[-_]?key|credential|private[-_]?key|"
                        r"auth(orization)?|session[-_]?key|cookie)", re.I)
SECRET_VALUE = re.compile(r"(bearer\s+[a-z0-9._~+/=-]{8,}|opsmcp_[a-z0-9_-]{32,}|AKIA[0-9A-Z]{16}|"
                          r"-----BEGIN [A-Z ]*PRIVATE KEY-----)", re.I)
REDACTED = "***redacted***"
#: Longest string value one audit record keeps (characters); longer ones are cut and marked.
MAX_VALUE_CHARS = 2_048
#: Largest audit record (bytes of JSON); a larger one keeps only its argument names.
MAX_RECORD_BYTES = 16_384
#: Bytes :meth:`FileAudit.tail` reads at a time, from the end of the file.
TAIL_BLOCK_BYTES = 65_536
#: ``phase`` values of DynamoDB audit-table items that are not audit records: approval-token
#: claims and approval requests (:mod:`opsmcp.calls.approval_store`).
NOT_RECORDS = ("claimed", "request")
#: This machine's name, recorded with the pid in every record (see :func:`mark_interrupted`).
HOST = socket.gethostname()

log = logging.getLogger("opsmcp")


def redact(value: Any, key: str = "") -> Any:
    """Copy of ``value`` with secrets replaced by ``***redacted***``.

    A value is secret when its key looks like one (password, token, api_key, secret,
    credential, authorization...) or the value itself looks like one (a bearer token, an
    opsmcp token, an AWS access key id, a PEM private key). Recurses into dicts and lists.
    """
    if key and SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and SECRET_VALUE.search(value):
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def bounded(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every string longer than :data:`MAX_VALUE_CHARS` cut and marked; if it
    is still over :data:`MAX_RECORD_BYTES` of JSON, its ``arguments`` are replaced by their
    names and sizes. Adds ``"cut": N`` (values cut) when anything was cut."""
    out, cuts = cap_values(record, MAX_VALUE_CHARS)
    if json_size(out) > MAX_RECORD_BYTES and isinstance(out.get("arguments"), dict):
        args = record.get("arguments") or {}
        out["arguments"] = {"omitted": f"arguments too large for one audit record ({json_size(args)} bytes)",
                            "sizes": {str(k)[:80]: json_size(v) for k, v in list(args.items())[:50]}}
        cuts += 1
    if json_size(out) > MAX_RECORD_BYTES:  # still too big (huge counts?): keep the identifying fields
        out = {k: out.get(k) for k in ("time", "call_id", "phase", "caller", "tool", "dry_run", "outcome",
                                      "approval", "duration_ms", "pid", "host")}
        out["omitted"] = "record too large; only its identifying fields were kept"
        cuts += 1
    if cuts:
        out["cut"] = cuts
    return out


class AuditSink(Protocol):
    """Where audit records go. Every method is a coroutine whose I/O runs off the event loop
    (a worker thread for the file, the bounded AWS call for DynamoDB), so a slow disk or
    table never stalls the other sessions."""

    async def append(self, record: dict[str, Any]) -> None:
        """Durably store one record (bounded by :func:`bounded`). Raises OpsError when it cannot."""

    async def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""

    async def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first where the sink keeps an order."""

    async def claim_once(self, key: str, expires_at: float) -> bool:
        """Record that the one-time approval ``key`` was used; False when it already was
        (by any replica sharing this sink). ``expires_at``: epoch seconds it stays relevant."""


class FileAudit:
    """JSON Lines audit file; each append is written and fsynced under a lock, in a worker
    thread (the caller awaits it: a record is on disk when ``append`` returns).

    Args:
        path: the file (mode 0600); its directory is created (0700) on first use.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pruned = 0.0

    async def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` (:func:`bounded`) as one line and fsync it, off the event loop.
        When the file does not end with a newline (a crash tore its last line), a newline
        goes first.

        Raises:
            OpsError: the file cannot be written (permissions, disk full, a directory).
        """
        line = (json.dumps(bounded(record), default=str, separators=(",", ":")) + "\n").encode()
        await anyio.to_thread.run_sync(self._write, line)

    def _write(self, line: bytes) -> None:
        try:
            with self._lock:
                fd = open_private(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)  # 0600, in a 0700 directory
                with os.fdopen(fd, "a+b") as fh:
                    end = fh.seek(0, os.SEEK_END)
                    if end:
                        fh.seek(end - 1)
                        if fh.read(1) != b"\n":
                            line = b"\n" + line  # the torn line stays unreadable; this record does not
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise OpsError(f"Cannot write the audit log {self.path}: {exc.strerror or exc}.",
                           "fix the file's permissions or set OPSMCP_AUDIT_LOG; no write was made.") from exc

    async def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records (unreadable lines are returned as ``{"unreadable": text}``)."""
        return await anyio.to_thread.run_sync(read_tail, self.path, n)

    async def records(self) -> list[dict[str, Any]]:
        """Every readable record of the file, oldest first (unreadable lines are skipped)."""
        return await anyio.to_thread.run_sync(read_records, self.path)

    @property
    def claims(self) -> Path:
        """The directory of one-time approval claims, beside the audit file."""
        return self.path.parent / "approval-claims"

    async def claim_once(self, key: str, expires_at: float) -> bool:
        """Claim the one-time approval ``key`` (off the event loop; see :meth:`_claim`)."""
        return await anyio.to_thread.run_sync(self._claim, key, expires_at)

    def _claim(self, key: str, expires_at: float) -> bool:
        """Claim the one-time approval ``key`` (blocking): create ``approval-claims/<sha256(key)>`` with
        ``O_CREAT|O_EXCL`` (atomic on one file system, so it holds across restarts and across
        processes sharing the data dir); False when the file exists. The file's mtime is
        set to ``expires_at``; expired claims are removed on later claims.

        Raises:
            OpsError: the claim cannot be written (the write then does not act).
        """
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            private_dir(self.claims)
            self._prune_claims()
            fd = open_private(self.claims / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OpsError(f"Cannot record the approval in {self.claims}: {exc.strerror or exc}.",
                           "fix the data directory's permissions; no write was made.") from exc
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(self.claims / name, (expires_at, expires_at))
        return True

    def _prune_claims(self, now: float | None = None) -> None:
        """Remove claims whose expiry (mtime) has passed; at most once a minute."""
        now = time.time() if now is None else now
        if now - self._pruned < 60:
            return
        self._pruned = now
        for entry in os.scandir(self.claims):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < now:
                    os.unlink(entry.path)
            except OSError:
                continue


def read_tail(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` records of the audit file at ``path`` (blocking; unreadable lines are
    returned as ``{"unreadable": text}``); [] when there is no file.

    Reads the file backwards in blocks until it holds ``n`` whole lines, so the cost is
    that of the lines returned, not of the whole log (the console reads it on every write).
    """
    if n <= 0 or not path.exists():
        return []
    with open(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        blocks: list[bytes] = []
        newlines = 0
        while pos > 0 and newlines <= n:
            step = min(TAIL_BLOCK_BYTES, pos)
            pos -= step
            fh.seek(pos)
            blocks.append(fh.read(step))
            newlines += blocks[-1].count(b"\n")
    lines = io.StringIO(b"".join(reversed(blocks)).decode("utf-8", errors="replace")).readlines()
    if pos > 0:
        lines = lines[1:]  # the first line is cut where reading stopped
    out = []
    for line in lines[-n:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"unreadable": line.rstrip("\n")})
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every readable record of the audit file at ``path``, oldest first (blocking;
    unreadable lines are skipped); [] when there is no file."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


class DynamoAudit:
    """Audit records in a DynamoDB table shared by several replicas; every call goes through
    :func:`~opsmcp.backends.aws.aws_call` (a worker thread, bounded by
    ``backend_timeout_seconds``).

    Args:
        clients: the shared boto3 clients.
        table: table name; hash key ``call_id`` (S), range key ``phase`` (S).
    """

    def __init__(self, clients: AwsClients, table: str) -> None:
        self.clients = clients
        self.table = table

    async def append(self, record: dict[str, Any]) -> None:
        """PutItem the record (the whole record also kept as a JSON string attribute).

        Raises:
            OpsError: the table is missing or unreachable, or did not answer in time.
        """
        record = bounded(record)
        item = {
            "call_id": {"S": record["call_id"]},
            "phase": {"S": record["phase"]},
            "time": {"S": record["time"]},
            "tool": {"S": record["tool"]},
            "record": {"S": json.dumps(record, default=str, separators=(",", ":"))},
        }
        try:
            await aws_call(self.clients, f"write an audit record to {self.table}",
                           self.clients.lazy("dynamodb").put_item, TableName=self.table, Item=item)
        except OpsError as exc:
            raise OpsError(f"Cannot write audit record to DynamoDB table {self.table}: {exc.message}",
                           "check OPSMCP_AUDIT_TABLE and AWS access; no write was made.") from exc

    async def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records by time (a Scan: the audit table is small and read rarely)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            resp = await aws_call(self.clients, f"read the audit table {self.table}",
                                  self.clients.lazy("dynamodb").scan, **kwargs)
            items += [json.loads(i["record"]["S"]) for i in resp.get("Items", [])
                      if i.get("phase", {}).get("S") not in NOT_RECORDS]
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        items.sort(key=lambda r: (r.get("time", ""), r.get("phase") == "outcome"))
        return items[-n:] if n > 0 else []

    async def records(self) -> list[dict[str, Any]]:
        """Every record of the table (a Scan), oldest first."""
        return await self.tail(1 << 62)

    async def claim_once(self, key: str, expires_at: float) -> bool:
        """Claim ``key`` with a conditional PutItem (``call_id = "approval:<key>"``), so one
        approval token is used once across every replica that shares the table.

        Raises:
            OpsError: the table is missing or unreachable (the write then does not act).
        """
        try:
            await aws_call(
                self.clients, f"record an approval in {self.table}", self.clients.lazy("dynamodb").put_item,
                TableName=self.table,
                Item={"call_id": {"S": f"approval:{key}"}, "phase": {"S": "claimed"},
                      "time": {"S": now_iso()}, "tool": {"S": "-"}, "expires_at": {"N": str(int(expires_at))},
                      "record": {"S": json.dumps({"call_id": f"approval:{key}", "phase": "claimed"})}},
                ConditionExpression="attribute_not_exists(call_id)",
            )
        except OpsError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise OpsError(f"Cannot record the approval in DynamoDB table {self.table}: {exc.message}",
                           "check OPSMCP_AUDIT_TABLE and AWS access; no write was made.") from exc
        return True


class AuditTrail:
    """What the call pipeline writes to the audit log: one record per step of a write.

    Built once by the composition root from the sink (``None``: audit disabled, records
    only get their ``call_id``) and a ``publish(type, data)`` callable (the ``/events``
    hub's), and handed to whoever records writes (the approval flow), so none of them
    reaches back into the server.
    """

    def __init__(self, sink: AuditSink | None, publish: Callable[[str, dict[str, Any]], Any] | None = None,
                 has_listeners: Callable[[], bool] = lambda: True) -> None:
        self.sink = sink
        self.publish = publish
        self.has_listeners = has_listeners

    async def record(self, tool: str, arguments: dict[str, Any], *, real: bool, phase: str, outcome: str,
               start: float, call_id: str | None = None, approval: str | None = None,
               counts: dict[str, Any] | None = None, note: str | None = None, strict: bool = True,
               approver: str | None = None) -> str | None:
        """Append one audit record and return its ``call_id`` (a new one unless given).

        ``arguments`` are redacted (:func:`redact`) and cut by the sink (:func:`bounded`);
        the server-injected parameters are left out; ``start`` (a ``time.perf_counter()``
        reading) gives the duration; ``approver``: who approved it (mode human). The sink's I/O
        runs off the event loop and is awaited: when this returns, the record is stored. The
        record is also published as a ``write`` event.

        Raises:
            OpsError: the sink could not store it and ``strict`` (the default), so the write
                does not act; otherwise the failure is logged and ``None`` is returned.
        """
        call_id = call_id or uuid.uuid4().hex
        shown = redact({k: v for k, v in arguments.items() if k not in INJECTED})
        record = {"time": now_iso(), "call_id": call_id, "phase": phase, "caller": caller.get(), "tool": tool,
                  "arguments": shown, "dry_run": not real, "outcome": outcome, "approval": approval,
                  "duration_ms": round((time.perf_counter() - start) * 1000, 1), "pid": os.getpid(), "host": HOST}
        if counts:
            record["counts"] = counts
        if note:
            record["note"] = note
        if approver:
            record["approver"] = approver
        if self.sink is None:
            return call_id
        try:
            with anyio.CancelScope(shield=True):  # a cancelled write still gets its outcome record
                await self.sink.append(record)
        except OpsError:
            if strict:
                raise
            log.error("audit record lost: %s", cut_text(json.dumps(record, default=str), 4_000))
            return None
        if self.publish is not None and self.has_listeners():
            self.publish("write", bounded(record))  # the same cut the audit sink applies
        return call_id

    def claim(self) -> Callable[[str, float], Awaitable[bool]] | None:
        """The sink's ``claim_once`` (one-time approval keys), or None without a sink."""
        return getattr(self.sink, "claim_once", None)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (it may be another program that
    reused the pid: callers treat "alive" as "maybe still running")."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_intents(records: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each ``intent`` record without an ``outcome`` of the same ``call_id``, with the last
    ``progress`` record of that call (or None), in the order the intents were written."""
    intents: dict[str, dict[str, Any]] = {}
    progress: dict[str, dict[str, Any]] = {}
    for r in records:
        call_id, phase = r.get("call_id"), r.get("phase")
        if not isinstance(call_id, str):
            continue
        if phase == "intent":
            intents[call_id] = r
        elif phase == "progress":
            progress[call_id] = r
        elif phase == "outcome":
            intents.pop(call_id, None)
            progress.pop(call_id, None)
    return [(r, progress.get(cid)) for cid, r in intents.items()]


async def mark_interrupted(sink: AuditSink, *, host: str = HOST,
                           alive: Callable[[int], bool] = pid_alive) -> list[dict[str, Any]]:
    """Close every open intent of a server process that is gone with an ``interrupted`` outcome.

    An intent is closed when it was written on this ``host`` by a pid that is no longer
    ``alive``, or carries no pid (records older than this rule). Intents of live processes
    and of other hosts (other replicas sharing a DynamoDB table) are left alone. The new
    record carries the last known progress (``counts``) and when it was reported.

    Returns the records appended. Raises OpsError when the sink cannot be written.
    """
    added = []
    for intent, last in open_intents(await sink.records()):
        pid = intent.get("pid")
        if intent.get("host") not in (None, host) or (isinstance(pid, int) and alive(pid)):
            continue
        record = {k: intent.get(k) for k in ("call_id", "caller", "tool", "arguments", "dry_run", "approval")}
        seen = f"last progress reported at {last.get('time')}" if last else "no progress was reported"
        record.update(time=now_iso(), phase="outcome", outcome="interrupted", duration_ms=None, pid=os.getpid(),
                      host=host, counts=(last or {}).get("counts") or {},
                      note=f"the server stopped during this call (killed or crashed); {seen}")
        await sink.append(record)
        added.append(record)
    return added


def format_records(records: Iterable[dict[str, Any]]) -> str:
    """Render records one per line for ``opsmcp audit tail``."""
    lines = []
    for r in records:
        if "unreadable" in r:
            lines.append(f"(unreadable) {r['unreadable']}")
            continue
        mode = "DRY-RUN" if r.get("dry_run") else "REAL"
        extra = f" outcome={r.get('outcome')} duration_ms={r.get('duration_ms')}" if r.get("phase") == "outcome" else ""
        if r.get("note"):
            extra += f" note={r['note']!r}"
        counts = f" counts={json.dumps(r['counts'])}" if r.get("counts") else ""
        lines.append(f"{r.get('time')} {r.get('phase', '?'):7} {mode:7} {r.get('tool')} caller={r.get('caller')} "
                     f"args={json.dumps(r.get('arguments'), default=str)}{extra}{counts} id={r.get('call_id')}")
    return "\n".join(lines)
