"""Where approval requests live (``OPSMCP_WRITE_APPROVAL=human``): durable, shared by every
process that serves the same data, and changed only by compare-and-set.

An :class:`ApprovalRequest` is one real write waiting for a person: the tool, its arguments,
the preview text and bound the person approves, who asked, when it expires, and what
happened to it. Its ``status`` moves only forward::

    pending ─┬─> approved ─> executing ─┬─> done
             │                          └─> failed
             ├─> denied
             └─> expired

Every change is :meth:`RequestStore.transition`: "set these fields if the status is still
one of these", atomic on both stores, so of two approvers racing (on one replica or two)
exactly one wins, and the write runs once.

- :class:`FileRequestStore` (one process, or several on one host sharing the data dir): one
  JSON file per request under ``<data dir>/approvals/``, replaced atomically (write a temp
  file, fsync, rename), every read-modify-write under an exclusive ``flock`` of
  ``approvals/.lock``.
- :class:`DynamoRequestStore` (several replicas): one item per request in the DynamoDB
  audit table (``call_id`` = the request id, ``phase`` = ``"request"``, beside the
  request's own audit records), each transition an ``UpdateItem`` conditioned on the status.

Every store method is a coroutine whose I/O runs off the event loop: the files in a worker
thread, every DynamoDB call through :func:`~opsmcp.backends.aws.aws_call` (bounded by
``backend_timeout_seconds``, errors mapped), like the audit sinks and the alert stores.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from opsmcp.backends.aws import AwsClients, aws_call, aws_error_code
from opsmcp.errors import OpsError
from opsmcp.private import open_private, replace_private

STATUSES = ("pending", "approved", "executing", "done", "failed", "denied", "expired")
#: Statuses a request never leaves.
FINAL = frozenset({"done", "failed", "denied", "expired"})
#: What a request id looks like; anything else is unknown without touching a store.
ID_PATTERN = re.compile(r"apr-[0-9a-f]{32}")
#: The ``phase`` of a request's item in the DynamoDB audit table (not an audit record).
REQUEST_PHASE = "request"
#: Decided requests older than this are dropped from the file store when a new one is made, s.
KEEP_DECIDED_SECONDS = 30 * 86_400


def new_id() -> str:
    """A fresh request id: ``apr-`` and 32 hex digits (random)."""
    return f"apr-{uuid.uuid4().hex}"


@dataclass
class ApprovalRequest:
    """One real write waiting for (or past) a person's decision.

    Attributes:
        id: ``apr-<32 hex>``.
        tool: the write tool.
        arguments: the call's arguments as the write will run them (without the preview
            flag); stored as given, shown only redacted (:attr:`shown_arguments`).
        shown_arguments: ``arguments`` redacted like the audit log.
        preview: the preview text the approver sees.
        bound_argument / bound: the argument held to the preview (redrive: ``max_messages``)
            and its value, or None.
        requester: the identity whose call created it.
        created_at / expires_at / decided_at: epoch seconds.
        status: see the module doc.
        approver / reason: who decided, and why (deny).
        result: the write's structured result once done.
        error: why it failed (or expired).
        executor: ``host:pid`` of the process that ran the write.
    """

    id: str
    tool: str
    arguments: dict[str, Any]
    shown_arguments: dict[str, Any]
    preview: str
    bound_argument: str | None
    bound: int | None
    requester: str
    created_at: float
    expires_at: float
    status: str = "pending"
    approver: str | None = None
    reason: str | None = None
    decided_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    executor: str | None = None

    def to_json(self) -> str:
        """The request as one JSON document."""
        return json.dumps(asdict(self), default=str, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ApprovalRequest:
        """Parse :meth:`to_json` output (unknown keys are ignored).

        Raises:
            ValueError: not a request document.
        """
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not ID_PATTERN.fullmatch(str(data.get("id", ""))):
            raise ValueError("not an approval request")
        return cls(**{k: v for k, v in data.items() if k in known})


class RequestStore(Protocol):
    """Durable approval requests (coroutines; their I/O runs off the event loop)."""

    async def create(self, request: ApprovalRequest) -> None:
        """Store a new request. Raises OpsError when it cannot be stored."""

    async def get(self, request_id: str) -> ApprovalRequest | None:
        """The request, or None when the id is unknown."""

    async def list(self) -> list[ApprovalRequest]:
        """Every stored request (any order)."""

    async def transition(self, request_id: str, expect: frozenset[str],
                         changes: dict[str, Any]) -> ApprovalRequest | None:
        """Atomically apply ``changes`` if the request's status is in ``expect``; the updated
        request, or None when it is unknown or its status is not in ``expect``."""


class FileRequestStore:
    """Approval requests as files under ``directory`` (see the module doc).

    Args:
        directory: ``<data dir>/approvals``; created on the first write.
        clock: epoch seconds (pruning of old decided requests).
    """

    def __init__(self, directory: Path, clock: Any = time.time) -> None:
        self.directory = Path(directory)
        self.clock = clock

    def _path(self, request_id: str) -> Path:
        if not ID_PATTERN.fullmatch(request_id):  # never a path from outside
            raise ValueError(f"not a request id: {request_id[:60]!r}")
        return self.directory / f"{request_id}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = open_private(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)  # in a 0700 directory
        except OSError as exc:
            raise OpsError(f"Cannot open the approval store {self.directory}: {exc.strerror or exc}.",
                           "fix the data directory's permissions (OPSMCP_DATA_DIR); nothing was changed.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, request: ApprovalRequest) -> None:
        replace_private(self._path(request.id), request.to_json().encode())

    def _read(self, path: Path) -> ApprovalRequest | None:
        try:
            return ApprovalRequest.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None

    async def create(self, request: ApprovalRequest) -> None:
        """Write ``request`` (a new id) in a worker thread; drops decided requests older than
        :data:`KEEP_DECIDED_SECONDS` (their story stays in the audit log).

        Raises:
            OpsError: the directory cannot be written.
        """
        await anyio.to_thread.run_sync(self._create, request)

    def _create(self, request: ApprovalRequest) -> None:
        try:
            with self._locked():
                self._write(request)
                cutoff = self.clock() - KEEP_DECIDED_SECONDS
                for old in self._all():
                    if old.status in FINAL and (old.decided_at or old.created_at) < cutoff:
                        with _ignored():
                            self._path(old.id).unlink()
        except OSError as exc:
            raise OpsError(f"Cannot store the approval request in {self.directory}: {exc.strerror or exc}.",
                           "fix the data directory's permissions or free disk space; nothing was changed.") from exc

    async def get(self, request_id: str) -> ApprovalRequest | None:
        """The request with ``request_id`` (None: unknown or not an id)."""
        if not ID_PATTERN.fullmatch(request_id):
            return None
        return await anyio.to_thread.run_sync(self._read, self._path(request_id))

    def _all(self) -> list[ApprovalRequest]:
        if not self.directory.is_dir():
            return []
        found = (self._read(p) for p in self.directory.glob("apr-*.json"))
        return [r for r in found if r is not None]

    async def list(self) -> list[ApprovalRequest]:
        """Every readable request file."""
        return await anyio.to_thread.run_sync(self._all)

    async def transition(self, request_id: str, expect: frozenset[str],
                         changes: dict[str, Any]) -> ApprovalRequest | None:
        """See :meth:`RequestStore.transition` (under the directory's lock, in a worker thread).

        Raises:
            OpsError: the file cannot be rewritten.
        """
        if not ID_PATTERN.fullmatch(request_id):
            return None
        return await anyio.to_thread.run_sync(self._transition, request_id, expect, changes)

    def _transition(self, request_id: str, expect: frozenset[str], changes: dict[str, Any]) -> ApprovalRequest | None:
        try:
            with self._locked():
                current = self._read(self._path(request_id))
                if current is None or current.status not in expect:
                    return None
                updated = ApprovalRequest(**(asdict(current) | changes))
                self._write(updated)
                return updated
        except OSError as exc:
            raise OpsError(f"Cannot update approval request {request_id}: {exc.strerror or exc}.",
                           "fix the data directory's permissions or free disk space.") from exc


class DynamoRequestStore:
    """Approval requests as items of the DynamoDB audit table (see the module doc); every
    call goes through :func:`~opsmcp.backends.aws.aws_call`.

    Args:
        clients: the shared boto3 clients.
        table: the audit table (hash key ``call_id``, range key ``phase``).
    """

    def __init__(self, clients: AwsClients, table: str) -> None:
        self.clients = clients
        self.table = table

    def _key(self, request_id: str) -> dict[str, Any]:
        return {"call_id": {"S": request_id}, "phase": {"S": REQUEST_PHASE}}

    async def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        """DynamoDB ``operation`` on the table through the bounded AWS call.

        Raises:
            OpsError: it failed, saying what could not be done (the AWS error as its cause).
        """
        try:
            return await aws_call(self.clients, f"{what} in {self.table}",
                                  getattr(self.clients.lazy("dynamodb"), operation), TableName=self.table, **kwargs)
        except OpsError as exc:
            raise OpsError(f"Cannot {what} in DynamoDB table {self.table}: {exc.message}",
                           "check OPSMCP_AUDIT_TABLE and AWS access; nothing was changed.") from exc

    async def create(self, request: ApprovalRequest) -> None:
        """PutItem the request (conditional: a new id).

        Raises:
            OpsError: the table is missing or unreachable, or did not answer in time.
        """
        item = self._key(request.id) | {
            "time": {"S": str(request.created_at)}, "tool": {"S": request.tool}, "status": {"S": request.status},
            "expires_at": {"N": str(int(request.expires_at))}, "request": {"S": request.to_json()}}
        await self._call("store the approval request", "put_item", Item=item,
                         ConditionExpression="attribute_not_exists(call_id)")

    async def get(self, request_id: str) -> ApprovalRequest | None:
        """The request (a consistent read), or None.

        Raises:
            OpsError: the table is missing or unreachable, or did not answer in time.
        """
        if not ID_PATTERN.fullmatch(request_id):
            return None
        item = (await self._call("read approval request", "get_item", Key=self._key(request_id),
                                 ConsistentRead=True)).get("Item")
        return ApprovalRequest.from_json(item["request"]["S"]) if item and "request" in item else None

    async def list(self) -> list[ApprovalRequest]:
        """Every request of the table (a Scan filtered on ``phase``; the audit table is small).

        Raises:
            OpsError: the table is missing or unreachable, or did not answer in time.
        """
        out: list[ApprovalRequest] = []
        kwargs: dict[str, Any] = {"FilterExpression": "#p = :p", "ConsistentRead": True,
                                  "ExpressionAttributeNames": {"#p": "phase"},
                                  "ExpressionAttributeValues": {":p": {"S": REQUEST_PHASE}}}
        while True:
            resp = await self._call("list approval requests", "scan", **kwargs)
            for item in resp.get("Items", []):
                with _ignored():
                    out.append(ApprovalRequest.from_json(item["request"]["S"]))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def transition(self, request_id: str, expect: frozenset[str],
                         changes: dict[str, Any]) -> ApprovalRequest | None:
        """See :meth:`RequestStore.transition`: an UpdateItem conditioned on ``status``.

        Raises:
            OpsError: the table is missing or unreachable, or did not answer in time.
        """
        current = await self.get(request_id)
        if current is None or current.status not in expect:
            return None
        updated = ApprovalRequest(**(asdict(current) | changes))
        try:
            await self._call(f"update approval request {request_id}", "update_item",
                             Key=self._key(request_id), UpdateExpression="SET #s = :to, #r = :doc",
                             ConditionExpression="#s = :from",
                             ExpressionAttributeNames={"#s": "status", "#r": "request"},
                             ExpressionAttributeValues={":to": {"S": updated.status}, ":doc": {"S": updated.to_json()},
                                                        ":from": {"S": current.status}})
        except OpsError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return None  # another approver (or replica) changed it first
            raise
        return updated


def _ignored() -> contextlib.suppress:
    """Skip an unreadable request file or item (it is left where it is)."""
    return contextlib.suppress(OSError, ValueError, KeyError, TypeError)


def store_for(sink: Any, data_dir: Path) -> RequestStore:
    """The request store that goes with audit sink ``sink``: the DynamoDB audit table's
    (several replicas) when the sink is one, else files under ``<data_dir>/approvals``."""
    table, clients = getattr(sink, "table", None), getattr(sink, "clients", None)
    if isinstance(table, str) and isinstance(clients, AwsClients):
        return DynamoRequestStore(clients, table)
    return FileRequestStore(data_dir / "approvals")


