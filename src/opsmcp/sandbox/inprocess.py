"""Seed the embedded moto server through its in-process backends instead of its HTTP API.

The embedded sandbox runs moto in this process, so the bulk of the scenario (dead
letters, orders, 9,360 metric points) can be written straight into moto's backends:
no request serialisation, no HTTP round trip, no Flask dispatch. That makes seeding
about 5x faster than going through the HTTP API (see ``scripts/bench_sandbox.py``).

:class:`InProcessClients` looks like :class:`~opsmcp.backends.aws.AwsClients` to the
seeders in :mod:`.seed`: it hands out small adapters whose bulk methods
(``create_queue``, ``get_queue_attributes``, ``send_message_batch``, ``list_tables``,
``create_table`` and its waiter, ``batch_write_item``, ``put_metric_data``, and the log
groups, streams and events of ``OPSMCP_LOG_BACKEND=cloudwatch``) call the backend
with the same arguments the HTTP layer would pass; any other method goes to a real boto3
client over HTTP.
Only for the embedded server: an external endpoint (LocalStack, a moto server elsewhere)
is seeded over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opsmcp.backends.aws import AwsClients

if TYPE_CHECKING:
    from opsmcp.config import Settings

ACCOUNT_ID = "123456789012"  # moto's default account (any non-AKIA access key maps to it)


class _Passthrough:
    """Delegates every method it does not define to the real boto3 client (made on first use)."""

    def __init__(self, real: Callable[[], Any], backend: Any) -> None:
        self._real = real
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


class _Sqs(_Passthrough):
    """Queue URLs are queue names here: the adapter resolves them itself."""

    def create_queue(self, QueueName: str, Attributes: dict[str, str] | None = None) -> dict[str, str]:
        self._backend.create_queue(QueueName, {}, **(Attributes or {}))
        return {"QueueUrl": QueueName}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        queue = self._backend.get_queue(QueueUrl)
        return {"Attributes": {"QueueArn": queue.queue_arn}}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        entries = {str(i): {"MessageAttributes": {}, "DelaySeconds": None, **e} for i, e in enumerate(Entries)}
        _, failed = self._backend.send_message_batch(QueueUrl, entries)
        return {"Failed": failed}


class _Dynamo(_Passthrough):
    """Tables are created in moto's backend (ACTIVE at once: the waiter returns at once)."""

    def list_tables(self, **_: Any) -> dict[str, Any]:
        return {"TableNames": sorted(self._backend.tables)}

    def create_table(self, TableName: str, KeySchema: list[dict[str, str]],
                     AttributeDefinitions: list[dict[str, str]], BillingMode: str = "PROVISIONED",
                     GlobalSecondaryIndexes: list[dict[str, Any]] | None = None,
                     ProvisionedThroughput: dict[str, int] | None = None) -> dict[str, Any]:
        try:
            table = self._backend.create_table(
                TableName, schema=KeySchema, throughput=ProvisionedThroughput, attr=AttributeDefinitions,
                global_indexes=GlobalSecondaryIndexes or [], indexes=[], streams=None, billing_mode=BillingMode,
                sse_specification=None, tags=[], deletion_protection_enabled=False, warm_throughput=None)
        except TypeError:  # another moto release's internal signature: the HTTP API is stable
            self._over_http = True  # then its waiter is a real one too
            args: dict[str, Any] = {"TableName": TableName, "KeySchema": KeySchema,
                                    "AttributeDefinitions": AttributeDefinitions, "BillingMode": BillingMode}
            if GlobalSecondaryIndexes:
                args["GlobalSecondaryIndexes"] = GlobalSecondaryIndexes
            if ProvisionedThroughput:
                args["ProvisionedThroughput"] = ProvisionedThroughput
            return dict(self._real().create_table(**args))
        return {"TableDescription": table.describe()}

    def get_waiter(self, name: str) -> Any:
        if name != "table_exists" or getattr(self, "_over_http", False):
            return self._real().get_waiter(name)
        return _NoWait()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        for table, requests in RequestItems.items():
            for request in requests:
                self._backend.put_item(table, request["PutRequest"]["Item"])
        return {"UnprocessedItems": {}}


class _CloudWatch(_Passthrough):
    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> dict[str, Any]:
        # The HTTP layer hands moto naive UTC datetimes; so do we.
        data = [dict(d, Timestamp=_naive_utc(d["Timestamp"])) if "Timestamp" in d else d for d in MetricData]
        self._backend.put_metric_data(Namespace, data)
        return {}


class _Logs(_Passthrough):
    """Log groups, streams and events written into moto's CloudWatch Logs backend."""

    def create_log_group(self, logGroupName: str) -> dict[str, Any]:
        self._backend.create_log_group(logGroupName, {})
        return {}

    def create_log_stream(self, logGroupName: str, logStreamName: str) -> dict[str, Any]:
        self._backend.create_log_stream(logGroupName, logStreamName)
        return {}

    def put_log_events(self, logGroupName: str, logStreamName: str, logEvents: list[dict[str, Any]]) -> dict[str, Any]:
        self._backend.put_log_events(logGroupName, logStreamName, logEvents)
        return {}


class _NoWait:
    """A waiter for a state moto's backend is already in."""

    def wait(self, **_: Any) -> None:
        return None


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


class InProcessClients(AwsClients):
    """:class:`AwsClients` for seeding the embedded moto server: bulk writes go to its
    in-process backends, everything else over HTTP to ``settings.aws_endpoint_url``.

    Args:
        settings: points at the embedded server (``aws_endpoint_url``, ``aws_region``).

    Raises:
        ImportError: moto is not installed (the ``sandbox`` extra).
    """

    def __init__(self, settings: Settings) -> None:
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.dynamodb.models import dynamodb_backends
        from moto.logs.models import logs_backends
        from moto.sqs.models import sqs_backends

        super().__init__(settings)
        region = settings.aws_region
        self._backends = {
            "sqs": (_Sqs, sqs_backends[ACCOUNT_ID][region]),
            "dynamodb": (_Dynamo, dynamodb_backends[ACCOUNT_ID][region]),
            "cloudwatch": (_CloudWatch, cloudwatch_backends[ACCOUNT_ID][region]),
            "logs": (_Logs, logs_backends[ACCOUNT_ID][region]),
        }

    def client(self, service: str, *, retries: bool = True) -> Any:
        """The adapter for ``service`` (``sqs``, ``dynamodb``, ``cloudwatch``), else the real client.

        Args:
            retries: as :meth:`AwsClients.client`; passed on to the real client (the
                adapter's own in-process calls make no network attempt to retry).
        """
        if service not in self._backends:
            return super().client(service, retries=retries)
        adapter, backend = self._backends[service]
        return adapter(lambda: super(InProcessClients, self).client(service, retries=retries), backend)
