"""Thin DynamoDB adapter for the orders table: GetItem and Query on its GSIs.

Items come back as plain JSON values (numbers as int/float, not Decimal). Every call
runs off the event loop through :func:`~.aws.aws_call`; errors are OpsError subclasses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from opsmcp.backends.aws import AwsClients, aws_call
from opsmcp.errors import InvalidInput, NotFound, not_found


def plain(value: Any) -> Any:
    """Convert deserialized DynamoDB values (Decimal, set, Binary) into JSON-friendly ones."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if hasattr(value, "value") and isinstance(value.value, bytes):
        return value.value.hex()
    return value


class DynamoBackend:
    """GetItem/Query against one DynamoDB endpoint with the shared client.

    Args:
        clients: the shared :class:`~.aws.AwsClients`.
    """

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients
        self._codec: tuple[Any, Any] | None = None

    @property
    def _de(self) -> Any:
        return self._types()[0]

    @property
    def _ser(self) -> Any:
        return self._types()[1]

    def _types(self) -> tuple[Any, Any]:
        """boto3's (de)serializers, imported on first use (keeps boto3 out of start-up)."""
        if self._codec is None:
            from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

            self._codec = (TypeDeserializer(), TypeSerializer())
        return self._codec

    @property
    def _ddb(self) -> Any:
        return self.clients.lazy("dynamodb")  # the client is made in the worker thread, never on the loop

    def item(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A DynamoDB-JSON item as a plain dict."""
        return {k: plain(self._de.deserialize(v)) for k, v in raw.items()}

    def key(self, value: dict[str, Any]) -> dict[str, Any]:
        """A plain dict as DynamoDB-JSON (for ExclusiveStartKey cursors)."""
        return {k: self._ser.serialize(v) for k, v in value.items()}

    async def _table_error(self, table: str, exc: NotFound) -> NotFound:
        try:
            resp = await aws_call(self.clients, "list tables", self._ddb.list_tables, Limit=100)
            names = resp.get("TableNames", [])
        except Exception:  # the original error matters more than the suggestion list
            names = []
        if "index" in exc.message.lower():
            return exc
        return not_found("table", table, names)

    async def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """GetItem (strongly consistent) of ``key`` (plain values); ``None`` when absent.

        Raises:
            NotFound: the table does not exist (closest table names listed).
        """
        try:
            resp = await aws_call(self.clients, f"read {table}", self._ddb.get_item, TableName=table,
                                  Key=self.key(key), ConsistentRead=True)
        except NotFound as exc:
            raise await self._table_error(table, exc) from None
        raw = resp.get("Item")
        return self.item(raw) if raw else None

    async def query(self, table: str, index: str | None, condition: str, values: dict[str, Any],
                    names: dict[str, str], *, filter_expression: str | None = None, limit: int = 50,
                    newest_first: bool = True, start_key: dict[str, Any] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Query ``table`` (optionally a GSI) with a key condition; returns ``(items, last_key)``.

        Args:
            condition: KeyConditionExpression using ``#name`` / ``:value`` placeholders.
            values: ``{":value": plain value}``.
            names: ``{"#name": attribute name}``.
            limit: 1..1000 items read per call (DynamoDB's Limit counts before the filter).
            newest_first: descending on the range key.
            start_key: the ``last_key`` of a previous page.

        Raises:
            NotFound: table or index missing.
            InvalidInput: DynamoDB rejected the expression.
        """
        kwargs: dict[str, Any] = {
            "TableName": table, "KeyConditionExpression": condition,
            "ExpressionAttributeValues": {k: self._ser.serialize(v) for k, v in values.items()},
            "ExpressionAttributeNames": names, "Limit": limit, "ScanIndexForward": not newest_first,
        }
        if index:
            kwargs["IndexName"] = index
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        if start_key:
            kwargs["ExclusiveStartKey"] = self.key(start_key)
        try:
            resp = await aws_call(self.clients, f"query {table}" + (f" index {index}" if index else ""),
                                  self._ddb.query, **kwargs)
        except NotFound as exc:
            raise await self._table_error(table, exc) from None
        except InvalidInput as exc:
            if index and "index" in exc.message.lower():
                raise NotFound(f"Table {table} has no index {index!r}: {exc.message}",
                               "create the GSI or set OPSMCP_ORDERS_STATUS_INDEX / "
                               "OPSMCP_ORDERS_CUSTOMER_INDEX.") from None
            raise
        last = resp.get("LastEvaluatedKey")
        return [self.item(i) for i in resp.get("Items", [])], (self.item(last) if last else None)

    async def indexes(self, table: str) -> dict[str, tuple[str, str | None]]:
        """The global secondary indexes of ``table`` from DescribeTable: ``{name: (hash key, range key)}``.

        Raises:
            NotFound: the table does not exist (closest table names listed).
        """
        try:
            resp = await aws_call(self.clients, f"describe table {table}", self._ddb.describe_table, TableName=table)
        except NotFound as exc:
            raise await self._table_error(table, exc) from None
        out: dict[str, tuple[str, str | None]] = {}
        for gsi in resp.get("Table", {}).get("GlobalSecondaryIndexes", []) or []:
            keys = {k["KeyType"]: k["AttributeName"] for k in gsi.get("KeySchema", [])}
            out[gsi["IndexName"]] = (keys.get("HASH", ""), keys.get("RANGE"))
        return out
