"""The one bounded AWS call: clients are made off the event loop, calls run in worker threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import make_settings

from opsmcp.backends.aws import AwsClients, aws_call

pytestmark = pytest.mark.anyio


async def test_a_lazy_client_is_made_in_the_worker_thread_not_on_the_event_loop(tmp_path) -> None:
    clients = AwsClients(make_settings("http://127.0.0.1:9", tmp_path))
    made_in: list[threading.Thread] = []

    class Stub:
        def list_queues(self, **kwargs: Any) -> dict[str, Any]:
            return {"QueueUrls": [], "asked": kwargs, "thread": threading.current_thread()}

    def client(service: str, *, retries: bool = True) -> Stub:
        made_in.append(threading.current_thread())
        return Stub()

    clients.client = client  # type: ignore[method-assign]
    operation = clients.lazy("sqs").list_queues
    assert made_in == [] and operation.__name__ == "list_queues"  # nothing made yet
    resp = await aws_call(clients, "list queues", operation, MaxResults=5)
    loop_thread = threading.current_thread()
    assert made_in and made_in[0] is not loop_thread and resp["thread"] is not loop_thread
    assert resp["asked"] == {"MaxResults": 5}
