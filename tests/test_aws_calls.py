"""I/O off the event loop and bounded: the one AWS call makes clients and calls in worker threads
and gives up within the backend timeout (the DynamoDB audit, alert store and approval requests
too); the audit file is written and fsynced in a worker thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
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


async def test_the_audit_file_is_written_and_fsynced_off_the_event_loop(tmp_path, monkeypatch) -> None:
    import os

    from opsmcp.calls.audit import FileAudit, read_tail

    synced_in: list[threading.Thread] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced_in.append(threading.current_thread())
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    await FileAudit(tmp_path / "audit.jsonl").append({"time": "t", "call_id": "1", "phase": "intent", "tool": "x"})
    assert synced_in and synced_in[0] is not threading.current_thread()
    assert read_tail(tmp_path / "audit.jsonl", 1)[0]["call_id"] == "1"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A TCP endpoint that accepts connections and never answers (a stalled backend)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("what", ["audit", "alerts", "approval requests"])
async def test_the_dynamodb_audit_and_alert_store_give_up_within_the_backend_timeout(tmp_path, what) -> None:
    import time

    from opsmcp.backends.alertstore import DynamoAlertStore
    from opsmcp.calls.approval_store import DynamoRequestStore
    from opsmcp.calls.audit import DynamoAudit
    from opsmcp.errors import OpsError

    with silent_endpoint() as endpoint:
        clients = AwsClients(make_settings(endpoint, tmp_path, backend_timeout_seconds=1))
        start = time.monotonic()
        with pytest.raises(OpsError, match="did not answer within 1 s"):
            if what == "audit":
                await DynamoAudit(clients, "audit").append({"time": "t", "call_id": "1", "phase": "intent",
                                                            "tool": "x"})
            elif what == "alerts":
                await DynamoAlertStore(clients, "alerts").all()
            else:  # mode human's requests, in the audit table
                await DynamoRequestStore(clients, "audit").list()
        assert time.monotonic() - start < 2.5  # botocore alone: 3 attempts x (connect + read timeout)
