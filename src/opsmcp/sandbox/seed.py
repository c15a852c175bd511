"""Write the incident scenario (:mod:`.scenario`) into AWS-compatible endpoints.

:func:`seed_aws` creates the queues (each DLQ wired with RedrivePolicy maxReceiveCount 3),
fills the DLQs and backlogs, creates the ``orders`` table with its status and customer
GSIs, loads the orders, and puts 6 hours of CloudWatch metrics. Works against the embedded
moto server, a standalone moto server or LocalStack. Idempotent for queue/table creation; messages are added each run
(:func:`seeded_state` tells whether a scenario is already there; :func:`remove_seeded`
deletes it).
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from opsmcp.backends.aws import AwsClients
from opsmcp.sandbox.scenario import MAX_RECEIVE_COUNT, Scenario

if TYPE_CHECKING:
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp.sandbox")


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    return value


def seed_queues(sqs: Any, scenario: Scenario) -> dict[str, str]:
    """Create every queue and DLQ, send the dead letters and backlogs; return ``{name: url}``."""
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
    for queue, entries in by_queue.items():
        for i in range(0, len(entries), 10):
            resp = sqs.send_message_batch(QueueUrl=urls[queue], Entries=entries[i : i + 10])
            if resp.get("Failed"):
                raise RuntimeError(f"seeding {queue} failed: {resp['Failed']}")
    return urls


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
    """Seed SQS, DynamoDB and (``metrics``) CloudWatch at ``settings.aws_endpoint_url``.

    Args:
        clients: how to reach the endpoint; default real boto3 clients over its HTTP API
            (the embedded sandbox passes :class:`~.inprocess.InProcessClients`).

    Returns counts of what was written (queues, dead letters, orders, metric points) for the
    start-up banner. Adds messages on every run: see :func:`seeded_state` first.
    """
    clients = clients or AwsClients(settings)
    seed_queues(clients.client("sqs"), scenario)
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


def seeded_state(settings: Settings, scenario: Scenario, clients: AwsClients | None = None) -> str | None:
    """Say what of the scenario already exists at the endpoint, or ``None`` when nothing does.

    Looks for the scenario's queues (with messages) and the orders table (with items), so a
    second ``opsmcp sandbox seed`` can stop instead of doubling every DLQ.
    """
    clients = clients or AwsClients(settings)
    sqs = clients.client("sqs")
    found: list[str] = []
    names = {spec.dlq for spec in scenario.queues if spec.dlq}
    urls = sqs.list_queues(MaxResults=1000).get("QueueUrls", [])
    for url in urls:
        if url.rsplit("/", 1)[-1] in names:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0)):
                found.append(url.rsplit("/", 1)[-1])
    ddb = clients.client("dynamodb")
    if settings.orders_table in ddb.list_tables().get("TableNames", []) and \
            ddb.scan(TableName=settings.orders_table, Select="COUNT", Limit=1).get("Count", 0):
        found.append(f"table {settings.orders_table}")
    return ", ".join(found) or None


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
