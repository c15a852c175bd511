"""The audit log: one trail of every write call, with secrets redacted.

Each write tool call (dry runs and previews too) appends two records sharing one
``call_id``: ``phase: "intent"`` before anything acts (if it cannot be written, the call
fails and nothing acts) and ``phase: "outcome"`` afterwards with the outcome, counts and
duration. Records go to a JSON Lines file (default ``<OPSMCP_DATA_DIR>/audit.jsonl``,
fsynced per record) or, for several replicas, to a DynamoDB table (``OPSMCP_AUDIT_TABLE``,
hash key ``call_id``, range key ``phase``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, Protocol

from opsmcp.errors import OpsError

SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|access[-_]?key|credential|private[-_]?key|"
                        r"auth(orization)?|session[-_]?key|cookie)", re.I)
SECRET_VALUE = re.compile(r"(bearer\s+[a-z0-9._~+/=-]{8,}|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----)", re.I)
REDACTED = "***redacted***"


def redact(value: Any, key: str = "") -> Any:
    """Copy of ``value`` with secrets replaced by ``***redacted***``.

    A value is secret when its key looks like one (password, token, api_key, secret,
    credential, authorization...) or the value itself looks like one (a bearer token, an
    AWS access key id, a PEM private key). Recurses into dicts and lists.
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


def now_iso() -> str:
    """The current UTC time, ISO-8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditSink(Protocol):
    """Where audit records go."""

    def append(self, record: dict[str, Any]) -> None:
        """Durably store one record. Raises OpsError when it cannot."""

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""


class FileAudit:
    """JSON Lines audit file; each append is written and fsynced under a lock.

    Args:
        path: the file; its directory is created on first use.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and fsync it.

        Raises:
            OpsError: the file cannot be written (permissions, disk full, a directory).
        """
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise OpsError(f"Cannot write the audit log {self.path}: {exc.strerror or exc}.",
                           "fix the file's permissions or set OPSMCP_AUDIT_LOG; no write was made.") from exc

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records (unreadable lines are returned as ``{"unreadable": text}``)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()[-n:] if n > 0 else []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unreadable": line.rstrip("\n")})
        return out


class DynamoAudit:
    """Audit records in a DynamoDB table shared by several replicas.

    Args:
        client: a boto3 DynamoDB client.
        table: table name; hash key ``call_id`` (S), range key ``phase`` (S).
    """

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def append(self, record: dict[str, Any]) -> None:
        """PutItem the record (the whole record also kept as a JSON string attribute).

        Raises:
            OpsError: the table is missing or unreachable.
        """
        item = {
            "call_id": {"S": record["call_id"]},
            "phase": {"S": record["phase"]},
            "time": {"S": record["time"]},
            "tool": {"S": record["tool"]},
            "record": {"S": json.dumps(record, default=str, separators=(",", ":"))},
        }
        try:
            self.client.put_item(TableName=self.table, Item=item)
        except Exception as exc:  # botocore error types vary; all mean "not recorded"
            raise OpsError(f"Cannot write audit record to DynamoDB table {self.table}: {exc}.",
                           "check OPSMCP_AUDIT_TABLE and AWS access; no write was made.") from exc

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records by time (a Scan: the audit table is small and read rarely)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            resp = self.client.scan(**kwargs)
            items += [json.loads(i["record"]["S"]) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        items.sort(key=lambda r: (r.get("time", ""), r.get("phase") == "outcome"))
        return items[-n:] if n > 0 else []


def create_audit_table(client: Any, table: str) -> None:
    """Create the DynamoDB audit table (on-demand) if it does not exist."""
    if table in client.list_tables().get("TableNames", []):
        return
    client.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "call_id", "AttributeType": "S"},
                              {"AttributeName": "phase", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "call_id", "KeyType": "HASH"}, {"AttributeName": "phase", "KeyType": "RANGE"}],
    )


def format_records(records: Iterable[dict[str, Any]]) -> str:
    """Render records one per line for ``opsmcp audit tail``."""
    lines = []
    for r in records:
        if "unreadable" in r:
            lines.append(f"(unreadable) {r['unreadable']}")
            continue
        mode = "DRY-RUN" if r.get("dry_run") else "REAL"
        extra = f" outcome={r.get('outcome')} duration_ms={r.get('duration_ms')}" if r.get("phase") == "outcome" else ""
        counts = f" counts={json.dumps(r['counts'])}" if r.get("counts") else ""
        lines.append(f"{r.get('time')} {r.get('phase', '?'):7} {mode:7} {r.get('tool')} caller={r.get('caller')} "
                     f"args={json.dumps(r.get('arguments'), default=str)}{extra}{counts} id={r.get('call_id')}")
    return "\n".join(lines)
