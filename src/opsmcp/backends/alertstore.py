"""The alert store: Alertmanager alerts de-duplicated by fingerprint, persisted, bounded.

:func:`parse_webhook` validates an Alertmanager webhook payload (version 4) into
:class:`IncomingAlert` values; a store's ``record`` merges them into what it holds, one
record per fingerprint, keeping firing/resolved state, start/end times, when it was first
and last received and how many times. Two stores:

* :class:`FileAlertStore`: one file under ``OPSMCP_DATA_DIR`` (``alerts.json``, mode
  0600), one JSON record per line: each post appends the records it changed (and fsyncs
  that append), and the file is rewritten (temp file, fsync, rename) only when it has grown
  to twice what it holds, so a post costs what it changed, not what the store holds, and
  a restart loses nothing. It reads the version-1 format (one JSON document) too;
* :class:`DynamoAlertStore`: a DynamoDB table (hash key ``fingerprint``) shared by
  replicas (``OPSMCP_ALERTS_TABLE``); each alert is one atomic ``UpdateItem``.

Every alert is bounded when it is parsed: at most :data:`MAX_LABELS` labels and
:data:`MAX_ANNOTATIONS` annotations, names of :data:`MAX_NAME_CHARS`, label values of
:data:`MAX_LABEL_CHARS` and annotation values of :data:`MAX_ANNOTATION_CHARS` characters;
what was cut is named in the alert's ``cut``. Both stores keep at most ``max_stored``
alerts, the file store also at most ``max_bytes`` of records: the oldest resolved ones
(by last received) go first, then the oldest firing ones. Every store method is a coroutine
whose I/O runs off the event loop: the file is written in a worker thread, and every
DynamoDB call goes through :func:`~opsmcp.backends.aws.aws_call` (bounded by
``backend_timeout_seconds``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from pydantic import BaseModel, Field

from opsmcp.backends.aws import AwsClients, aws_call
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, OpsError
from opsmcp.private import open_private, replace_private
from opsmcp.times import iso

_ZERO_TIME = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"(\.\d{1,6})\d*")

#: Bounds of one alert: labels and annotations kept, characters of a name and of a value.
MAX_LABELS = 64
MAX_ANNOTATIONS = 32
MAX_NAME_CHARS = 128
MAX_LABEL_CHARS = 512
MAX_ANNOTATION_CHARS = 4_000
#: Labels kept first when an alert has more than :data:`MAX_LABELS`.
KEY_LABELS = ("alertname", "severity")
#: The first line of a version-2 file store.
FILE_HEADER = {"opsmcp_alert_store": 2}


class IncomingAlert(BaseModel):
    """One alert of a webhook payload, normalised."""

    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    generator_url: str | None
    cut: list[str] = []


class StoredAlert(BaseModel):
    """One alert as the store keeps it (one per fingerprint)."""

    fingerprint: str = Field(description="Alertmanager's fingerprint of the alert's label set.")
    status: str = Field(description="firing or resolved (the newest notification's state).")
    labels: dict[str, str] = Field(description="The alert's labels (alertname, severity, ...).")
    annotations: dict[str, str] = Field(description="The alert's annotations (summary, description, runbook_url, ...).")
    starts_at: str | None = Field(description="When the alert started firing, ISO-8601 UTC.")
    ends_at: str | None = Field(description="When it resolved (or its expected end), ISO-8601 UTC; null if unset.")
    generator_url: str | None = Field(description="Link to the expression in Prometheus that produced it.")
    first_received: str = Field(description="When opsmcp first received it, ISO-8601 UTC.")
    last_received: str = Field(description="When opsmcp last received it, ISO-8601 UTC.")
    received_count: int = Field(description="How many notifications carried this alert.")
    cut: list[str] = Field(default_factory=list, description="What the store cut from this alert to its bounds "
                           "(labels or annotations beyond the count kept, values beyond the characters kept); "
                           "empty when it is whole.")


def _time(value: Any) -> str | None:
    """Alertmanager's RFC 3339 time (nanoseconds allowed) as ISO-8601 UTC; the zero time is None."""
    if not value or value == _ZERO_TIME or str(value).startswith("0001-01-01"):
        return None
    text = _FRACTION.sub(r"\1", str(value)).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"Cannot read time {value!r} in the webhook payload.") from None
    return iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _strings(value: Any, what: str, most: int, chars: int, cut: list[str]) -> dict[str, str]:
    """``value`` (an object) as at most ``most`` string pairs, names cut to
    :data:`MAX_NAME_CHARS` and values to ``chars`` characters; what was cut is added to ``cut``.

    Raises:
        InvalidInput: ``value`` is not an object.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object of strings.")
    kind = what.rpartition(".")[2]
    names = sorted(value, key=lambda k: (KEY_LABELS.index(k) if k in KEY_LABELS else len(KEY_LABELS), str(k)))
    if len(names) > most:
        cut.append(f"{kind}: kept {most} of {len(names)}")
    out: dict[str, str] = {}
    long_names = long_values = 0
    for k in names[:most]:
        name, text = str(k), str(value[k])
        long_names += len(name) > MAX_NAME_CHARS
        long_values += len(text) > chars
        out[name[:MAX_NAME_CHARS]] = text[:chars]
    if long_names:
        cut.append(f"{kind}: {long_names} name(s) cut to {MAX_NAME_CHARS} characters")
    if long_values:
        cut.append(f"{kind}: {long_values} value(s) cut to {chars} characters")
    return out


def parse_webhook(payload: Any) -> list[IncomingAlert]:
    """Validate an Alertmanager webhook payload (``version`` "4") into its alerts.

    A missing ``fingerprint`` (other senders) is derived from the sorted labels.

    Raises:
        InvalidInput: not an object, another version, no ``alerts`` list, or an alert that
            is not an object or has a status other than firing/resolved.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("The webhook body must be a JSON object (Alertmanager's webhook payload).")
    if str(payload.get("version")) != "4":
        raise InvalidInput(f"Unsupported webhook payload version {payload.get('version')!r}; expected \"4\".")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidInput("The webhook payload has no `alerts` list.")
    out = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise InvalidInput(f"alerts[{i}] is not an object.")
        status = str(alert.get("status", ""))
        if status not in ("firing", "resolved"):
            raise InvalidInput(f"alerts[{i}].status is {status!r}; expected firing or resolved.")
        cut: list[str] = []
        labels = _strings(alert.get("labels"), f"alerts[{i}].labels", MAX_LABELS, MAX_LABEL_CHARS, cut)
        fingerprint = str(alert.get("fingerprint") or "").strip()[:64] or hashlib.sha256(
            json.dumps(labels, sort_keys=True).encode()
        ).hexdigest()[:16]
        out.append(IncomingAlert(
            fingerprint=fingerprint,
            status=status,
            labels=labels,
            annotations=_strings(alert.get("annotations"), f"alerts[{i}].annotations", MAX_ANNOTATIONS,
                                 MAX_ANNOTATION_CHARS, cut),
            starts_at=_time(alert.get("startsAt")),
            ends_at=_time(alert.get("endsAt")),
            generator_url=str(alert["generatorURL"])[:2000] if alert.get("generatorURL") else None,
            cut=cut,
        ))
    return out


class Change(BaseModel):
    """What one received alert changed: ``new``, ``resolved``, ``refired`` or ``repeat``."""

    kind: str
    alert: StoredAlert


def merge(old: StoredAlert | None, new: IncomingAlert, now: str) -> Change:
    """The stored alert after receiving ``new`` (``old``: what was stored, if anything)."""
    if old is None:
        stored = StoredAlert(**new.model_dump(), first_received=now, last_received=now, received_count=1)
        return Change(kind="new", alert=stored)
    kind = "repeat"
    if new.status != old.status:
        kind = "resolved" if new.status == "resolved" else "refired"
    stored = StoredAlert(
        **new.model_dump(),
        first_received=old.first_received,
        last_received=now,
        received_count=old.received_count + 1,
    )
    return Change(kind=kind, alert=stored)


def prune(alerts: dict[str, StoredAlert], max_stored: int, sizes: dict[str, int] | None = None,
          max_bytes: int | None = None) -> list[str]:
    """Remove alerts from ``alerts`` (oldest resolved first, then oldest firing, by last
    received) until at most ``max_stored`` remain and, with ``sizes`` (bytes of each
    alert's record) and ``max_bytes``, their records total at most ``max_bytes``; return
    the removed fingerprints (also removed from ``sizes``)."""
    total = sum(sizes.values()) if sizes is not None else 0
    over_bytes = sizes is not None and max_bytes is not None and total > max_bytes
    if len(alerts) <= max_stored and not over_bytes:
        return []
    gone = []
    for a in sorted(alerts.values(), key=lambda a: (a.status != "resolved", a.last_received)):
        if len(alerts) <= max_stored and not (sizes is not None and max_bytes is not None and total > max_bytes):
            break
        del alerts[a.fingerprint]
        if sizes is not None:
            total -= sizes.pop(a.fingerprint, 0)
        gone.append(a.fingerprint)
    return gone


#: Characters of an alert's summary a listing shows.
SUMMARY_CHARS = 300


def newest_firing_first(alerts: list[StoredAlert]) -> list[StoredAlert]:
    """``alerts`` as every listing shows them: firing first, then newest start first."""
    ordered = sorted(alerts, key=lambda a: a.starts_at or "", reverse=True)
    ordered.sort(key=lambda a: a.status != "firing")
    return ordered


def brief(a: StoredAlert) -> dict[str, Any]:
    """One alert as a listing shows it (``list_alerts``, the console): ``fingerprint``,
    ``alertname``, ``status``, ``severity``, ``summary`` (the summary or description
    annotation, cut to :data:`SUMMARY_CHARS` characters), ``starts_at``, ``ends_at``,
    ``received_count``."""
    text = a.annotations.get("summary") or a.annotations.get("description")
    return {"fingerprint": a.fingerprint, "alertname": a.labels.get("alertname"), "status": a.status,
            "severity": a.labels.get("severity"), "summary": text[:SUMMARY_CHARS] if text else None,
            "starts_at": a.starts_at, "ends_at": a.ends_at, "received_count": a.received_count}


class AlertStore(Protocol):
    """What the alerts toolset, the webhook and completion need from a store."""

    where: str

    async def record(self, incoming: list[IncomingAlert]) -> list[Change]:
        """Merge ``incoming`` and persist; return one change per alert."""
        ...

    async def all(self) -> list[StoredAlert]:
        """Every stored alert."""
        ...

    async def get(self, fingerprint: str) -> StoredAlert | None:
        """One alert, or None."""
        ...


class FileAlertStore:
    """Alerts in one file of JSON records, one per line, appended as they change (thread-safe).

    Line 1 is :data:`FILE_HEADER`; each further line is ``{"put": <StoredAlert>}`` or
    ``{"drop": <fingerprint>}``, the last line about a fingerprint winning. A torn last line
    (a crash mid-append) is skipped. The file is rewritten holding only the live alerts
    when it has grown past twice their size (and 1 MiB), and when it is in the version-1
    format (one JSON document, as opsmcp wrote it before).

    Args:
        path: the file (created 0600, its directory 0700, on first write).
        max_stored: most alerts kept.
        max_bytes: most bytes of alert records kept (see :func:`prune`).

    Raises (from ``record``):
        OpsError: the file cannot be written.
    """

    def __init__(self, path: Path, max_stored: int = 2000, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.max_stored = max_stored
        self.max_bytes = max_bytes
        self.where = str(self.path)
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._file_bytes = 0
        self._alerts: dict[str, StoredAlert] = self._load()

    @staticmethod
    def _line(record: dict[str, Any]) -> bytes:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()

    def _load(self) -> dict[str, StoredAlert]:
        if not self.path.exists():
            return {}
        alerts: dict[str, StoredAlert] = {}
        try:
            with self.path.open("rb") as fh:
                first = fh.readline()
                head = json.loads(first) if first.strip() else {}
                if isinstance(head, dict) and isinstance(head.get("alerts"), list):  # version 1: one document
                    alerts = {a["fingerprint"]: StoredAlert.model_validate(a) for a in head["alerts"]}
                    self._sizes = {fp: len(self._line({"put": a.model_dump()})) for fp, a in alerts.items()}
                    self._file_bytes = -1  # rewrite in this format on the first record
                    return alerts
                if head != FILE_HEADER:
                    raise ValueError(f"the first line is not {json.dumps(FILE_HEADER)}")
                self._file_bytes = len(first)
                for raw in fh:
                    self._file_bytes += len(raw)
                    try:
                        entry = json.loads(raw)
                        if "put" in entry:
                            alert = StoredAlert.model_validate(entry["put"])
                            alerts[alert.fingerprint] = alert
                            self._sizes[alert.fingerprint] = len(raw)
                        else:
                            alerts.pop(str(entry["drop"]), None)
                            self._sizes.pop(str(entry["drop"]), None)
                    except (ValueError, KeyError, TypeError):  # a torn line (crash mid-append): skipped
                        continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OpsError(f"Cannot read the alert store {self.path}: {exc}.",
                           "move the file aside; opsmcp starts a new one.") from exc
        return alerts

    def _append(self, lines: list[bytes]) -> None:
        """Append ``lines`` and fsync them."""
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "ab") as f:
            if f.tell() == 0:
                header = self._line(FILE_HEADER)
                f.write(header)
                self._file_bytes = len(header)
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self._file_bytes += sum(len(line) for line in lines)

    def _rewrite(self) -> None:
        """Write the live alerts to a new file (0600), fsync, and rename it over the store."""
        lines = [self._line(FILE_HEADER)] + [self._line({"put": a.model_dump()}) for a in self._alerts.values()]
        replace_private(self.path, b"".join(lines))
        self._file_bytes = sum(len(line) for line in lines)

    async def record(self, incoming: list[IncomingAlert]) -> list[Change]:
        """Merge ``incoming`` (de-duplicated by fingerprint), prune, append what changed (in a
        worker thread)."""
        return await anyio.to_thread.run_sync(self._record, incoming)

    def _record(self, incoming: list[IncomingAlert]) -> list[Change]:
        now = iso(datetime.now(UTC)) or ""
        with self._lock:
            changes = []
            lines: dict[str, bytes] = {}
            for alert in incoming:
                change = merge(self._alerts.get(alert.fingerprint), alert, now)
                self._alerts[alert.fingerprint] = change.alert
                lines[alert.fingerprint] = self._line({"put": change.alert.model_dump()})
                self._sizes[alert.fingerprint] = len(lines[alert.fingerprint])
                changes.append(change)
            for fp in prune(self._alerts, self.max_stored, self._sizes, self.max_bytes):
                lines[fp] = self._line({"drop": fp})
            try:
                live = sum(self._sizes.values())
                if self._file_bytes < 0 or self._file_bytes > 2 * live + (1 << 20):
                    self._rewrite()
                else:
                    self._append(list(lines.values()))
            except OSError as exc:
                raise OpsError(f"Cannot write the alert store {self.path}: {exc}.",
                               "check OPSMCP_DATA_DIR is writable.") from exc
        return changes

    async def all(self) -> list[StoredAlert]:
        """Every stored alert (:meth:`snapshot`)."""
        return self.snapshot()

    def snapshot(self) -> list[StoredAlert]:
        """Every stored alert, from memory (no I/O: callable from any thread or loop)."""
        with self._lock:
            return list(self._alerts.values())

    async def get(self, fingerprint: str) -> StoredAlert | None:
        """One alert by exact fingerprint."""
        with self._lock:
            return self._alerts.get(fingerprint)


class DynamoAlertStore:
    """Alerts in a DynamoDB table (hash key ``fingerprint``, string) shared by replicas.

    Each received alert is one ``UpdateItem`` (``received_count`` incremented atomically,
    ``first_received`` set once). Every 50th ``record`` call scans the table and deletes
    beyond ``max_stored`` (oldest resolved first).
    """

    PRUNE_EVERY = 50

    def __init__(self, clients: AwsClients, table: str, max_stored: int = 2000) -> None:
        self.clients = clients
        self.table = table
        self.max_stored = max_stored
        self.where = f"DynamoDB table {table}"
        self._calls = 0

    async def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        """One DynamoDB call through :func:`~opsmcp.backends.aws.aws_call` (bounded, mapped)."""
        return await aws_call(self.clients, what, getattr(self.clients.lazy("dynamodb"), operation), **kwargs)

    async def record(self, incoming: list[IncomingAlert]) -> list[Change]:
        """Upsert each alert; return what changed (from the item's previous state)."""
        now = iso(datetime.now(UTC)) or ""
        changes = []
        for alert in incoming:
            values = {
                ":s": {"S": alert.status},
                ":l": {"S": json.dumps(alert.labels)},
                ":a": {"S": json.dumps(alert.annotations)},
                ":sa": {"S": alert.starts_at or ""},
                ":ea": {"S": alert.ends_at or ""},
                ":g": {"S": alert.generator_url or ""},
                ":c": {"S": json.dumps(alert.cut)},
                ":now": {"S": now},
                ":one": {"N": "1"},
            }
            resp = await self._call(
                f"store alert {alert.fingerprint}", "update_item",
                TableName=self.table,
                Key={"fingerprint": {"S": alert.fingerprint}},
                UpdateExpression=(
                    "SET #s = :s, labels = :l, annotations = :a, starts_at = :sa, ends_at = :ea, "
                    "generator_url = :g, #cut = :c, last_received = :now, "
                    "first_received = if_not_exists(first_received, :now) "
                    "ADD received_count :one"
                ),
                ExpressionAttributeNames={"#s": "status", "#cut": "cut"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            )
            before = resp.get("Attributes")
            changes.append(merge(self._from_item(before) if before else None, alert, now))
        self._calls += 1
        if self._calls % self.PRUNE_EVERY == 0:
            await self._prune()
        return changes

    @staticmethod
    def _from_item(item: dict[str, Any]) -> StoredAlert:
        def s(name: str) -> str:
            return str(item.get(name, {}).get("S", ""))

        return StoredAlert(
            fingerprint=s("fingerprint"),
            status=s("status"),
            labels=json.loads(s("labels") or "{}"),
            annotations=json.loads(s("annotations") or "{}"),
            starts_at=s("starts_at") or None,
            ends_at=s("ends_at") or None,
            generator_url=s("generator_url") or None,
            first_received=s("first_received"),
            last_received=s("last_received"),
            received_count=int(item.get("received_count", {}).get("N", "0")),
            cut=json.loads(s("cut") or "[]"),
        )

    async def all(self) -> list[StoredAlert]:
        """Every stored alert (a Scan, at most ``max_stored`` + one page)."""
        out: list[StoredAlert] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            resp = await self._call(f"scan alerts table {self.table}", "scan", **kwargs)
            out += [self._from_item(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp or len(out) > self.max_stored:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return out

    async def get(self, fingerprint: str) -> StoredAlert | None:
        """One alert by exact fingerprint (GetItem)."""
        resp = await self._call(f"read alert {fingerprint}", "get_item", TableName=self.table,
                                Key={"fingerprint": {"S": fingerprint}})
        return self._from_item(resp["Item"]) if "Item" in resp else None

    async def _prune(self) -> None:
        alerts = {a.fingerprint: a for a in await self.all()}
        for fp in prune(alerts, self.max_stored):
            await self._call(f"delete alert {fp}", "delete_item", TableName=self.table,
                             Key={"fingerprint": {"S": fp}})


def build_alert_store(settings: Settings, clients: AwsClients) -> AlertStore:
    """The DynamoDB store when ``alerts_table`` is set, else ``<data_dir>/alerts.json``."""
    if settings.alerts_table:
        return DynamoAlertStore(clients, settings.alerts_table, settings.alerts_max_stored)
    return FileAlertStore(Path(settings.data_dir) / "alerts.json", settings.alerts_max_stored,
                          settings.alerts_max_bytes)
