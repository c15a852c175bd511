"""Write the incident scenario (:mod:`.scenario`) into AWS-compatible endpoints.

The scenario has five parts (:data:`PARTS`): the queues (each DLQ wired with RedrivePolicy
maxReceiveCount 3), their messages (dead letters and backlogs), the ``orders`` table with
its status and customer GSIs and items, 6 hours of CloudWatch metrics, and the log lines
(:func:`seed_logs`, into an embedded log store). Works against the embedded moto server, a
standalone moto server or LocalStack.

:func:`seed_aws` writes everything without looking first (a fresh endpoint: the sandbox).
:func:`resume_seed` (``opsmcp sandbox seed``) looks at each part first and writes only what
is missing, so a seed that failed half-way is finished by the next run and a complete one
is left alone; it reports per part what it found and wrote. :func:`remove_seeded` deletes
the scenario (``--reset``).

Seeding is not an interactive call: it runs under its own bounds (:func:`seed_clients`:
:data:`SEED_TIMEOUT_SECONDS` per call, not the tools' ``backend_timeout_seconds``), in small
batches (10 messages, 25 orders, one metric series per PutMetricData), and retries a
failed write with backoff (:data:`SEED_ATTEMPTS`), checking first whether the failed
attempt landed (a timed-out write may have been applied), so a retry never doubles data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsmcp.backends.aws import AwsClients, map_aws_error
from opsmcp.errors import InvalidInput, NotFound, OpsError
from opsmcp.sandbox.scenario import MAX_RECEIVE_COUNT, Scenario

if TYPE_CHECKING:
    from opsmcp.backends.cloudwatch import Series
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp.sandbox")

#: The parts of the scenario, in the order they are seeded.
PARTS = ("queues", "messages", "orders", "metrics", "logs")
#: What each part counts.
UNITS = {"queues": "queues", "messages": "messages", "orders": "orders", "metrics": "metric series",
         "logs": "log lines"}
#: Connect and read timeout of one seeding call, seconds. A loaded LocalStack took up to
#: 8.2 s for one 1,000-datapoint PutMetricData; the tools' 5 s bound is for interactive calls.
SEED_TIMEOUT_SECONDS = 60.0
#: Attempts of one seeding write (the first and the retries), with backoff between them.
SEED_ATTEMPTS = 5
#: Seconds before the first retry of a seeding write; doubled before each next one.
SEED_BACKOFF_SECONDS = 1.0


@dataclass
class PartResult:
    """What seeding did to one part: ``wanted`` items in the scenario (queues, messages,
    orders, metric series, log lines), ``found`` already there before, ``written`` by this run."""

    part: str
    wanted: int
    found: int = 0
    written: int = 0
    skipped: str = ""

    @property
    def status(self) -> str:
        """``skipped``, ``present`` (nothing to do), ``seeded`` (was empty) or ``completed`` (was partial)."""
        if self.skipped:
            return "skipped"
        if not self.written:
            return "present"
        return "seeded" if not self.found else "completed"

    def describe(self) -> str:
        """One phrase, e.g. ``messages: completed (found 30 of 55 messages, wrote 25)``."""
        unit = UNITS.get(self.part, self.part)
        if self.skipped:
            return f"{self.part}: skipped ({self.skipped})"
        if self.status == "present":
            return f"{self.part}: present ({self.found} of {self.wanted} {unit})"
        if self.status == "seeded":
            return f"{self.part}: seeded {self.written} {unit}"
        return f"{self.part}: completed (found {self.found} of {self.wanted} {unit}, wrote {self.written})"


def seed_clients(settings: Settings) -> AwsClients:
    """AWS clients for seeding: :data:`SEED_TIMEOUT_SECONDS` per call instead of the tools' bound."""
    return AwsClients(settings.model_copy(update={"backend_timeout_seconds": SEED_TIMEOUT_SECONDS}))


def _retrying(what: str, write: Callable[[], Any], landed: Callable[[], bool] | None = None,
              endpoint: str = "the endpoint") -> None:
    """Run ``write`` up to :data:`SEED_ATTEMPTS` times with doubling backoff.

    Before each retry ``landed()`` (when given) says whether the failed attempt was applied
    after all (a timeout is "outcome unknown"); then nothing is written again.

    Raises:
        OpsError: the last attempt's failure (botocore errors mapped), or at once a refusal
            that a retry cannot change (bad input, a missing queue or table).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    delay = SEED_BACKOFF_SECONDS
    for attempt in range(1, SEED_ATTEMPTS + 1):
        try:
            write()
            return
        except (OpsError, BotoCoreError, ClientError) as exc:
            error = exc if isinstance(exc, OpsError) else map_aws_error(exc, endpoint, what)
            if isinstance(error, (InvalidInput, NotFound)) or attempt == SEED_ATTEMPTS:
                if error is exc:
                    raise
                raise error from exc
            log.warning("seeding: %s failed (attempt %d of %d), retrying in %.0f s: %s",
                        what, attempt, SEED_ATTEMPTS, delay, error)
        time.sleep(delay)
        delay *= 2
        if landed is not None and landed():
            return


def create_queues(sqs: Any, scenario: Scenario) -> dict[str, str]:
    """Create every queue and DLQ (CreateQueue is idempotent for the same attributes);
    return ``{name: url}``."""
    urls: dict[str, str] = {}
    for spec in scenario.queues:
        fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if spec.fifo else {}
        attrs = {"VisibilityTimeout": "30", "MessageRetentionPeriod": "1209600", **fifo_attrs}
        if spec.dlq:
            dlq_url = sqs.create_queue(QueueName=spec.dlq, Attributes=dict(attrs))["QueueUrl"]
            urls[spec.dlq] = dlq_url
            arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
        urls[spec.name] = sqs.create_queue(QueueName=spec.name, Attributes=attrs)["QueueUrl"]
    return urls


def queue_entries(scenario: Scenario) -> dict[str, list[dict[str, Any]]]:
    """The SendMessageBatch entries of every queue: its dead letters, then its backlog."""
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for n, letter in enumerate(scenario.dead_letters):
        entry: dict[str, Any] = {"Id": str(n), "MessageBody": letter.body}
        if letter.attributes:
            entry["MessageAttributes"] = letter.attributes
        if letter.queue.endswith(".fifo"):
            entry["MessageGroupId"] = letter.group_id or "default"
            entry["MessageDeduplicationId"] = f"seed-{n}"
        by_queue.setdefault(letter.queue, []).append(entry)
    for queue, bodies in scenario.backlog.items():
        by_queue.setdefault(queue, []).extend({"Id": f"b{n}", "MessageBody": b} for n, b in enumerate(bodies))
    return by_queue


def queue_depth(sqs: Any, url: str) -> int:
    """Messages in the queue at ``url``: visible, in flight and delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs.get(name, 0)) for name in names)


def send_entries(sqs: Any, url: str, entries: list[dict[str, Any]], *, have: int = 0, check: Any = None,
                 endpoint: str = "the endpoint") -> int:
    """Send ``entries[have:]`` to the queue at ``url`` in batches of 10; return how many were sent.

    With ``check`` (a client that reads the queue), a failed batch is retried (see
    :func:`_retrying`) unless the queue's depth shows it landed; a retry after a partial
    failure (the answer's ``Failed`` entries) sends only the refused entries.

    Raises:
        OpsError: a batch still failed after :data:`SEED_ATTEMPTS` attempts.
    """
    sent = 0
    for i in range(have, len(entries), 10):
        batch = entries[i : i + 10]
        after = i + len(batch)
        pending = list(batch)

        def send(url: str = url) -> None:
            nonlocal pending
            resp = sqs.send_message_batch(QueueUrl=url, Entries=pending)
            failed = {f["Id"] for f in resp.get("Failed") or []}
            pending = [e for e in pending if e["Id"] in failed]
            if pending:
                raise OpsError(f"the queue refused {len(pending)} of the seeded messages: {resp['Failed']}")

        def landed(url: str = url, after: int = after) -> bool:
            return queue_depth(check, url) >= after

        name = url.rsplit("/", 1)[-1]
        if check is None:
            send()
        else:
            _retrying(f"send {len(batch)} messages to {name}", send, landed, endpoint)
        sent += len(batch)
    return sent


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    return value


def create_orders_table(ddb: Any, settings: Settings) -> None:
    """Create the orders table (hash key orderId) with its status and customer GSIs, if missing."""
    existing = ddb.list_tables().get("TableNames", [])
    if settings.orders_table in existing:
        return
    ddb.create_table(
        TableName=settings.orders_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"}
                              for a in ("orderId", "status", "customerId", "orderDate")],
        KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {"IndexName": settings.orders_status_index, "Projection": {"ProjectionType": "ALL"},
             "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                           {"AttributeName": "orderDate", "KeyType": "RANGE"}]},
            {"IndexName": settings.orders_customer_index, "Projection": {"ProjectionType": "ALL"},
             "KeySchema": [{"AttributeName": "customerId", "KeyType": "HASH"},
                           {"AttributeName": "orderDate", "KeyType": "RANGE"}]},
        ],
    )
    ddb.get_waiter("table_exists").wait(TableName=settings.orders_table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def create_audit_table(ddb: Any, table: str) -> None:
    """Create the audit table (hash ``call_id``, range ``phase``, both strings), if missing."""
    if table in ddb.list_tables().get("TableNames", []):
        return
    ddb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("call_id", "phase")],
        KeySchema=[{"AttributeName": "call_id", "KeyType": "HASH"}, {"AttributeName": "phase", "KeyType": "RANGE"}],
    )


def put_orders(ddb: Any, table: str, orders: list[dict[str, Any]]) -> None:
    """BatchWriteItem ``orders`` (plain dicts; floats stored as numbers) in chunks of 25."""
    from boto3.dynamodb.types import TypeSerializer

    ser = TypeSerializer()
    for i in range(0, len(orders), 25):
        requests = [{"PutRequest": {"Item": {k: ser.serialize(_decimals(v)) for k, v in o.items()}}}
                    for o in orders[i : i + 25]]
        pending = {table: requests}
        for _ in range(10):
            resp = ddb.batch_write_item(RequestItems=pending)
            pending = resp.get("UnprocessedItems") or {}
            if not pending:
                break


def seed_aws(settings: Settings, scenario: Scenario, *, metrics: bool = True,
             clients: AwsClients | None = None) -> dict[str, int]:
    """Seed SQS, DynamoDB and (``metrics``) CloudWatch at ``settings.aws_endpoint_url``, without
    looking at what is there first (a fresh endpoint; :func:`resume_seed` looks).

    Args:
        clients: how to reach the endpoint; default real boto3 clients over its HTTP API
            (the embedded sandbox passes :class:`~.inprocess.InProcessClients`).

    Returns counts of what was written (queues, dead letters, orders, metric points) for the
    start-up banner. Adds messages on every run.
    """
    clients = clients or AwsClients(settings)
    sqs = clients.client("sqs")
    urls = create_queues(sqs, scenario)
    for queue, entries in queue_entries(scenario).items():
        send_entries(sqs, urls[queue], entries)
    ddb = clients.client("dynamodb")
    create_orders_table(ddb, settings)
    put_orders(ddb, settings.orders_table, scenario.orders)
    if settings.audit_table:  # OPSMCP_AUDIT_TABLE on the sandbox: the table lives there too
        create_audit_table(ddb, settings.audit_table)
    counts = {"queues": sum(2 if q.dlq else 1 for q in scenario.queues),
              "dead_letters": len(scenario.dead_letters), "orders": len(scenario.orders)}
    if metrics:
        from opsmcp.backends.cloudwatch import put_series_sync

        counts["metric_points"] = put_series_sync(clients, scenario.metric_series())
    if getattr(settings, "log_backend", "embedded") == "cloudwatch":  # the log lines into CloudWatch Logs too
        counts["log_events"] = seed_log_groups(clients.client("logs"), scenario)
    return counts


#: The sandbox's CloudWatch Logs groups: one per service, ``/opsmcp/sandbox/<service>``.
SANDBOX_LOG_GROUP_PREFIX = "/opsmcp/sandbox/"


def seed_log_groups(logs: Any, scenario: Scenario) -> int:
    """Put the scenario's log lines into CloudWatch Logs, one group per service
    (``/opsmcp/sandbox/<service>``, stream ``seed``), as JSON messages without the time
    (the event's timestamp); return how many events were put."""
    from opsmcp.backends.cloudwatch_logs.load import batches
    from opsmcp.backends.logbackend import to_ms

    by_service: dict[str, list[tuple[int, str]]] = {}
    for line in scenario.log_lines():
        doc = json.loads(line.to_json())
        doc.pop("@timestamp", None)
        by_service.setdefault(line.service, []).append((to_ms(line.timestamp), json.dumps(doc, separators=(",", ":"))))
    put = 0
    for service, events in by_service.items():
        group = SANDBOX_LOG_GROUP_PREFIX + service
        try:
            logs.create_log_group(logGroupName=group)
            logs.create_log_stream(logGroupName=group, logStreamName="seed")
        except Exception as exc:  # a second seed of the same endpoint: the group is there
            if "AlreadyExists" not in f"{type(exc).__name__} {exc}":
                raise
        for batch in batches(events):
            logs.put_log_events(logGroupName=group, logStreamName="seed", logEvents=batch)
            put += len(batch)
    return put


def _series_key(series: Series) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    namespace, name, dimensions, _, _ = series
    return namespace, name, tuple(sorted((dimensions or {}).items()))


def present_series(cw: Any, series: Sequence[Series]) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """The keys (namespace, name, sorted dimensions) of ``series`` that ListMetrics shows."""
    found = set()
    for namespace in sorted({s[0] for s in series}):
        for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace):
            for m in page.get("Metrics", []):
                dims = tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
                found.add((namespace, m["MetricName"], dims))
    return found & {_series_key(s) for s in series}


def count_items(ddb: Any, table: str) -> int:
    """Items in ``table`` (a paginated COUNT scan); 0 when the table does not exist."""
    if table not in ddb.list_tables().get("TableNames", []):
        return 0
    total = 0
    for page in ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT"):
        total += int(page.get("Count", 0))
    return total


def resume_seed(settings: Settings, scenario: Scenario, clients: AwsClients | None = None,
                *, metrics: bool = True, purged: bool = False) -> list[PartResult]:
    """Seed what of the scenario is missing at the endpoint, part by part (see the module doc).

    queues: created when missing. messages: a queue holding fewer than its seeded messages
    gets the rest (those it holds are taken as the first ones sent). orders: written again
    (idempotent puts) when the table holds fewer. metrics: each series ListMetrics does not
    show is put. ``purged``: the queues were just purged (:func:`remove_seeded`; SQS may take
    up to 60 s to finish a purge), so every message is sent without counting what is left.
    Returns one :class:`PartResult` per AWS part, in :data:`PARTS` order.

    Raises:
        OpsError: a part could not be written after :data:`SEED_ATTEMPTS` attempts; the
            parts before it are done and the next run resumes from there.
    """
    clients = clients or seed_clients(settings)
    endpoint = clients.endpoint
    sqs, sqs_once = clients.client("sqs"), clients.client("sqs", retries=False)
    names = {n for spec in scenario.queues for n in (spec.name, spec.dlq) if n}
    existing = {u.rsplit("/", 1)[-1] for u in sqs.list_queues(MaxResults=1000).get("QueueUrls", [])} & names
    urls = create_queues(sqs, scenario)
    results = [PartResult("queues", len(names), len(existing), len(names) - len(existing))]

    entries = queue_entries(scenario)
    msgs = PartResult("messages", sum(len(e) for e in entries.values()))
    for queue, batch in entries.items():
        have = 0 if purged else min(queue_depth(sqs, urls[queue]), len(batch))
        msgs.found += have
        msgs.written += send_entries(sqs_once, urls[queue], batch, have=have, check=sqs, endpoint=endpoint)
    results.append(msgs)

    ddb = clients.client("dynamodb")
    orders = PartResult("orders", len(scenario.orders), min(count_items(ddb, settings.orders_table),
                                                            len(scenario.orders)))
    if orders.found < orders.wanted:
        create_orders_table(ddb, settings)
        _retrying(f"write {orders.wanted} orders", lambda: put_orders(ddb, settings.orders_table, scenario.orders),
                  endpoint=endpoint)  # PutRequest overwrites: a repeat never doubles an order
        orders.written = orders.wanted - orders.found
    if settings.audit_table:
        create_audit_table(ddb, settings.audit_table)
    results.append(orders)

    series = scenario.metric_series()
    part = PartResult("metrics", len(series))
    if not metrics:
        part.skipped = "not asked"
    else:
        from opsmcp.backends.cloudwatch import put_series_sync

        cw = clients.client("cloudwatch")

        def listed(one: Series) -> bool:
            return bool(present_series(cw, [one]))

        there = present_series(cw, series)
        part.found = len(there)
        for one in series:
            key = _series_key(one)
            if key in there:
                continue
            _retrying(f"put {len(one[4])} datapoints of {key[0]}/{key[1]}",
                      partial(put_series_sync, clients, [one], retries=False),
                      partial(listed, one), endpoint)
            part.written += 1
    results.append(part)
    return results


def _holds_trace(store: Any, trace_id: str) -> bool:
    try:
        return bool(store.get_trace(trace_id, limit=1).lines)
    except NotFound:
        return False


def seed_logs(store_path: Path, scenario: Scenario, *, reset: bool = False) -> PartResult:
    """The scenario's log lines into the embedded log store at ``store_path``, unless it already
    holds them (the first dead letter's trace has lines there). The lines go in as one
    transaction, so the store holds all of them or none. ``reset`` deletes the store's lines first
    (the story's times are relative to now: old lines would not match a new seed)."""
    from opsmcp.backends.logstore import LogStore

    lines = [line.to_json() for line in scenario.log_lines()]
    trace = next((d.trace_id for d in scenario.dead_letters if d.trace_id), None)
    with LogStore(store_path) as store:
        if reset and store.exists():
            store.reset()
        if store.exists() and trace and _holds_trace(store, trace):
            return PartResult("logs", len(lines), len(lines))
        loaded = store.ingest(lines, source="sandbox seed").loaded
    return PartResult("logs", len(lines), 0, loaded)


def remove_seeded(settings: Settings, scenario: Scenario, clients: AwsClients | None = None) -> None:
    """Empty the scenario's queues (PurgeQueue: a deleted queue's name cannot be reused for
    60 s on AWS) and delete the orders table at the endpoint (``sandbox seed --reset``).

    Only the scenario's own queue names and ``settings.orders_table`` are touched.
    """
    clients = clients or AwsClients(settings)
    sqs = clients.client("sqs")
    names = {n for spec in scenario.queues for n in (spec.name, spec.dlq) if n}
    for url in sqs.list_queues(MaxResults=1000).get("QueueUrls", []):
        if url.rsplit("/", 1)[-1] in names:
            sqs.purge_queue(QueueUrl=url)
    ddb = clients.client("dynamodb")
    if settings.orders_table in ddb.list_tables().get("TableNames", []):
        ddb.delete_table(TableName=settings.orders_table)
        ddb.get_waiter("table_not_exists").wait(TableName=settings.orders_table,
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 30})
