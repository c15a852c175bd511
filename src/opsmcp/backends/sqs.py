"""Thin SQS adapter: name/URL resolution and the handful of calls the queue tools make.

Every method is async, runs boto3 in a worker thread through :func:`~.aws.aws_call`,
and raises :class:`~opsmcp.errors.OpsError` subclasses (never botocore exceptions).
The semantics (peek, DLQ analysis, the redrive mover) live in
:mod:`opsmcp.toolsets.queues`; this module only speaks the API.
"""

from __future__ import annotations

import json
from typing import Any

from opsmcp.backends.aws import AwsClients, aws_call
from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, not_found

MAX_LIST = 1000  # ListQueues returns at most 1000 per page


def queue_name(url_or_arn: str) -> str:
    """The queue name at the end of a queue URL or ARN."""
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def redrive_policy(attributes: dict[str, str]) -> dict[str, Any] | None:
    """The parsed ``RedrivePolicy`` attribute (``deadLetterTargetArn``, ``maxReceiveCount``), if any."""
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return None
    try:
        policy = json.loads(raw)
    except ValueError:
        return None
    if "maxReceiveCount" in policy:
        policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
    return policy


class SqsBackend:
    """SQS calls for one endpoint, sharing the process-wide boto3 client.

    Args:
        clients: the shared :class:`~.aws.AwsClients`.
    """

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @property
    def _sqs(self) -> Any:
        return self.clients.lazy("sqs")  # the client is made in the worker thread, never on the loop

    async def list_urls(self, prefix: str | None = None, limit: int = MAX_LIST,
                        token: str | None = None) -> tuple[list[str], str | None]:
        """Queue URLs whose names start with ``prefix`` (at most ``limit``, 1..1000).

        Returns ``(urls, next_token)``; pass ``next_token`` back as ``token`` for the next page.

        Raises:
            InvalidInput: SQS refused ``token`` (not one it issued, or expired).
        """
        kwargs: dict[str, Any] = {"MaxResults": max(1, min(limit, MAX_LIST))}
        if prefix:
            kwargs["QueueNamePrefix"] = prefix
        if token:
            kwargs["NextToken"] = token
        try:
            resp = await aws_call(self.clients, "list queues", self._sqs.list_queues, **kwargs)
        except InvalidInput:
            if not token:
                raise
            raise InvalidInput("cursor is not one list_queues returned (or it expired).",
                               "call list_queues again without cursor (and the same prefix) to start over.") from None
        return list(resp.get("QueueUrls", [])), resp.get("NextToken")

    async def all_urls(self) -> list[str]:
        """Every queue URL (all pages, at most 10,000)."""
        urls: list[str] = []
        token = None
        for _ in range(10):
            page, token = await self.list_urls(token=token)
            urls += page
            if not token:
                break
        return urls

    async def all_names(self) -> list[str]:
        """Every queue name (at most 10,000), for "did you mean" suggestions."""
        return [queue_name(u) for u in await self.all_urls()]

    async def resolve(self, queue: str) -> str:
        """Turn a queue name or URL into its URL.

        Raises:
            NotFound: no such queue; the message lists the closest existing names.
            BackendUnavailable: the endpoint answered without a URL (or did not answer).
        """
        queue = queue.strip()
        name = queue_name(queue) if queue.startswith(("http://", "https://", "arn:")) else queue
        try:
            resp = await aws_call(self.clients, f"find queue {name!r}", self._sqs.get_queue_url, QueueName=name)
        except NotFound:
            raise not_found("queue", name, await self.all_names(), "list_queues") from None
        if not resp.get("QueueUrl"):  # seen from a moto server answering while it restarts
            raise BackendUnavailable(f"{self.clients.endpoint} answered find queue {name!r} without a queue URL.",
                                     "retry in a moment; if it persists, check the endpoint (AWS_ENDPOINT_URL).")
        return str(resp["QueueUrl"])

    async def attributes(self, url: str) -> dict[str, str]:
        """All attributes of the queue at ``url`` (counts, ARN, RedrivePolicy, FifoQueue...)."""
        resp = await aws_call(
            self.clients, f"read attributes of {queue_name(url)}", self._sqs.get_queue_attributes,
            QueueUrl=url, AttributeNames=["All"],
        )
        return resp.get("Attributes", {})

    async def dead_letter_sources(self, url: str) -> list[str]:
        """URLs of the queues whose RedrivePolicy targets the queue at ``url``
        (ListDeadLetterSourceQueues, every page): one request per 1,000 sources instead of
        reading every queue's attributes.

        Raises:
            NotFound: no queue at ``url``.
        """
        urls: list[str] = []
        token = None
        for _ in range(10):
            kwargs: dict[str, Any] = {"QueueUrl": url, "MaxResults": MAX_LIST}
            if token:
                kwargs["NextToken"] = token
            resp = await aws_call(self.clients, f"list the source queues of {queue_name(url)}",
                                  self._sqs.list_dead_letter_source_queues, **kwargs)
            urls += resp.get("queueUrls", [])
            token = resp.get("NextToken")
            if not token:
                break
        return urls

    async def receive(self, url: str, max_messages: int, visibility_timeout: int,
                      wait_seconds: int = 0) -> list[dict[str, Any]]:
        """ReceiveMessage with every system and message attribute.

        Args:
            max_messages: 1..10.
            visibility_timeout: seconds the received messages stay hidden (0 = visible at once).
            wait_seconds: long-poll wait, 0..20 seconds.
        """
        resp = await aws_call(
            self.clients, f"receive from {queue_name(url)}", self._sqs.receive_message,
            QueueUrl=url, MaxNumberOfMessages=max_messages, VisibilityTimeout=visibility_timeout,
            WaitTimeSeconds=wait_seconds, AttributeNames=["All"], MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(resp.get("Messages", []))

    async def release(self, url: str, receipt_handles: list[str]) -> list[str]:
        """Make received messages visible again at once (visibility timeout 0), in batches of 10.

        Returns the receipt handles that failed (expired handles are harmless: the message
        is already visible again).
        """
        failed: list[str] = []
        for i in range(0, len(receipt_handles), 10):
            chunk = receipt_handles[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0} for n, h in enumerate(chunk)]
            resp = await aws_call(
                self.clients, f"release messages in {queue_name(url)}", self._sqs.change_message_visibility_batch,
                QueueUrl=url, Entries=entries,
            )
            failed += [chunk[int(f["Id"])] for f in resp.get("Failed", [])]
        return failed

    async def send_batch(self, url: str, entries: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
        """SendMessageBatch (<= 10 entries, each with a unique ``Id``), in exactly one attempt:
        sends are not idempotent, and botocore's retry of a timed-out send can apply it again.

        Returns ``(ids that succeeded, {id: error message} for those that failed)``.

        Raises:
            InvalidInput, NotFound: SQS rejected the whole request (nothing was sent).
            OpsError: anything else, e.g. a timeout; the batch may or may not have been sent.
        """
        once = self.clients.lazy("sqs", retries=False)
        resp = await aws_call(
            self.clients, f"send to {queue_name(url)}", once.send_message_batch, QueueUrl=url, Entries=entries
        )
        ok = [s["Id"] for s in resp.get("Successful", [])]
        failed = {f["Id"]: f"{f.get('Code', 'Error')}: {f.get('Message', '')}".strip() for f in resp.get("Failed", [])}
        return ok, failed

    async def delete_batch(self, url: str, receipt_handles: dict[str, str]) -> dict[str, str]:
        """DeleteMessageBatch for ``{id: receipt handle}`` (<= 10). Returns ``{id: error}`` of failures."""
        if not receipt_handles:
            return {}
        entries = [{"Id": i, "ReceiptHandle": h} for i, h in receipt_handles.items()]
        resp = await aws_call(
            self.clients, f"delete from {queue_name(url)}", self._sqs.delete_message_batch, QueueUrl=url,
            Entries=entries,
        )
        return {f["Id"]: f"{f.get('Code', 'Error')}: {f.get('Message', '')}" for f in resp.get("Failed", [])}

    async def require(self, queue: str) -> tuple[str, dict[str, str]]:
        """Resolve ``queue`` and read its attributes in one step: ``(url, attributes)``."""
        url = await self.resolve(queue)
        try:
            return url, await self.attributes(url)
        except NotFound:
            raise NotFound(f"Queue {queue!r} disappeared while reading it.", "call list_queues.") from None
