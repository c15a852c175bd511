"""Chat notifications against a local receiver (a real HTTP server on loopback): a pending
approval and a new firing alert reach the Slack and the generic webhook with a console link
and no secrets; delivery retries with backoff, gives up, times out, never blocks a call;
and the chat path of an approval (the link → the request → approve) runs the write once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import anyio.to_thread
import boto3
import httpx
from helpers import make_settings, serving
from pydantic import SecretStr

from opsmcp.backends.chat import ChatNotifier, slack_text
from opsmcp.sandbox.scenario import build_scenario
from opsmcp.sandbox.seed import seed_aws

DLQ = "order-cancellation-queue-dlq"


class Receiver:
    """Records every POST (path, headers, JSON body). Paths: ``/flaky`` answers 503 twice
    then 200, ``/down`` always 500, ``/refuse`` 400, ``/slow`` sleeps 3 s; others 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], Any, bytes]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.changed:
                    receiver.posts.append((self.path, dict(self.headers), json.loads(raw or b"null"), raw))
                    tries = sum(1 for p in receiver.posts if p[0] == self.path)
                    receiver.changed.notify_all()
                if self.path == "/slow":
                    time.sleep(3)
                code = {"/down": 500, "/refuse": 400}.get(self.path, 503 if self.path == "/flaky" and tries <= 2
                                                          else 200)
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, n: int, timeout: float = 30) -> list[tuple[str, dict[str, str], Any, bytes]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.posts) >= n, timeout), self.posts
            return list(self.posts)


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serving(r.server):
        yield r


async def test_delivery_retries_gives_up_times_out_and_never_blocks() -> None:
    with receiver() as r:
        n = ChatNotifier(timeout=0.5, attempts=3, backoff=0.05)
        assert await n.deliver(f"{r.url}/flaky", {"x": 1}) is True
        assert [p[0] for p in r.posts].count("/flaky") == 3  # 503, 503, 200
        assert await n.deliver(f"{r.url}/down", {"x": 1}) is False
        assert [p[0] for p in r.posts].count("/down") == 3
        assert await n.deliver(f"{r.url}/refuse", {"x": 1}) is False
        assert [p[0] for p in r.posts].count("/refuse") == 1  # a 400 is not retried
        started = time.monotonic()
        assert await n.deliver(f"{r.url}/slow", {"x": 1}) is False
        assert time.monotonic() - started < 3 * 0.5 + 0.05 + 0.1 + 2  # three bounded attempts, not 9 s
        assert n.sent == 1 and n.failed == 3
        slow = ChatNotifier(webhook_url=f"{r.url}/slow", timeout=5, attempts=1)
        started = time.monotonic()
        slow.notify({"type": "alert", "alertname": "X"})
        assert time.monotonic() - started < 0.05 and len(slow._tasks) == 1  # scheduled, not awaited
        await slow.drain()
        assert slow.sent == 1


def test_slack_text_escapes_what_comes_from_outside() -> None:
    text = slack_text({"type": "approval", "id": "apr-1", "tool": "redrive_dlq", "requester": "<!channel>",
                       "preview": "Move 1\n  1 x <https://evil.example|click> & ```", "bound": None,
                       "expires_at": "t", "console_url": "https://ops.example.com/#/approvals/apr-1"})
    assert "<!channel>" not in text and "<https://evil" not in text and "&lt;!channel&gt;" in text
    assert "<https://ops.example.com/#/approvals/apr-1|Review apr-1>" in text


async def test_a_pending_approval_is_sent_redacted_and_without_secrets(fresh_moto, tmp_path) -> None:
    from opsmcp.calls.identity import caller
    from opsmcp.server import build_server

    with receiver() as r:
        settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                                 approval_secret=SecretStr("the-approval-secret-" * 2), http_token="the-http-token",
                                 notify_slack_url=SecretStr(f"{r.url}/slack/T000/B000/XXXX"),
                                 notify_webhook_url=SecretStr(f"{r.url}/hook"))
        _, runtime = build_server(settings)
        reset = caller.set("agent")
        try:
            req = await runtime.approvals.desk.create(
                "redrive_dlq", {"queue": DLQ, "api_token": "sk-live-1234567", "note": "Bearer abcdefghijklmnop"},
                "Move 8 message(s)", "max_messages", 8)
        finally:
            caller.reset(reset)
        posts = await anyio.to_thread.run_sync(r.wait_for, 2)  # the loop keeps running the deliveries
    raw = b" ".join(p[3] for p in posts)
    for secret in (b"sk-live-1234567", b"abcdefghijklmnop", b"the-approval-secret", b"the-http-token"):
        assert secret not in raw
    hook = next(p[2] for p in posts if p[0] == "/hook")
    assert hook["type"] == "approval" and hook["id"] == req.id and hook["arguments"]["api_token"] == "***redacted***"
    assert hook["bound"] == {"argument": "max_messages", "value": 8} and hook["requester"] == "agent"
    slack = next(p[2] for p in posts if p[0].startswith("/slack"))
    assert slack["unfurl_links"] is False and "Approval needed" in slack["text"]


def test_chat_link_approval_and_alert_notifications_over_http(fresh_moto, tmp_path) -> None:
    """The simulated chat path: the notification's link names the request; a person with
    ops:approve follows it (the console's approve call) and the write runs once. A new
    firing alert is sent too; a repeat and a resolution are not."""
    from helpers import serve_app
    from helpers import TEAM, bearer, mcp_call, team_tokens, visible

    tokens = team_tokens(tmp_path, {**TEAM, "alertmanager": ["alerts:write"]})
    with receiver() as r:
        settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues", "alerts"],
                                 write_approval="human", tokens_file=tmp_path / "tokens.jsonl",
                                 alertmanager_url="http://127.0.0.1:9", public_url="https://ops.example.com",
                                 notify_slack_url=SecretStr(f"{r.url}/slack"),
                                 notify_webhook_url=SecretStr(f"{r.url}/hook"))
        seed_aws(settings, build_scenario(), metrics=False)
        sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
        with serve_app(settings) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
            pending = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False))
            posts = r.wait_for(2)
            slack = next(p[2]["text"] for p in posts if p[0] == "/slack")
            link = re.search(r"<(https://ops\.example\.com/#/approvals/(apr-[0-9a-f]{32}))\|", slack)
            assert link is not None and link.group(2) == pending["approval_id"], slack
            hook = next(p[2] for p in posts if p[0] == "/hook")
            assert hook["console_url"] == link.group(1)
            # The person clicks the link: the console shows the request and calls approve.
            shown = http.get(f"/api/approvals/{link.group(2)}", headers={"Authorization": f"Bearer {tokens['lead']}"})
            assert shown.json()["status"] == "pending" and "Move 8" in shown.json()["preview"]
            done = http.post(f"/api/approvals/{link.group(2)}/approve",
                             headers={"Authorization": f"Bearer {tokens['lead']}"})
            assert done.status_code == 200 and done.json()["result"]["moved"] == 8
            alert = {"version": "4", "status": "firing", "receiver": "opsmcp", "groupKey": "{}", "alerts": [
                {"status": "firing", "fingerprint": "f1", "labels": {"alertname": "DLQGrowing", "severity": "page"},
                 "annotations": {"summary": "<!channel> look"}, "startsAt": "2026-12-01T08:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph"}]}
            hooks = bearer(tokens["alertmanager"])  # Alertmanager posts with its own credential
            assert http.post("/webhooks/alertmanager", json=alert, headers=hooks).status_code == 200
            posts = r.wait_for(4)
            assert http.post("/webhooks/alertmanager", json=alert, headers=hooks).status_code == 200  # a repeat
            resolved = json.loads(json.dumps(alert).replace('"firing"', '"resolved"'))
            assert http.post("/webhooks/alertmanager", json=resolved, headers=hooks).status_code == 200
            time.sleep(0.5)  # proving a negative: nothing more is sent for a repeat or a resolution
            assert http.post("/webhooks/approvals", json={}).status_code == 404  # signed callbacks are off
        assert len(r.posts) == 4
        sent = [p[2] for p in r.posts[2:]]
        alert_hook = next(b for b in sent if "type" in b)
        assert alert_hook["type"] == "alert" and alert_hook["alertname"] == "DLQGrowing"
        assert alert_hook["console_url"] == "https://ops.example.com/" and "summary" not in json.dumps(alert_hook)
        assert "DLQGrowing" in next(b["text"] for b in sent if "text" in b)
    assert visible(sqs, DLQ) == 0


def test_a_signed_chat_callback_approves_as_the_mapped_identity(fresh_moto, tmp_path) -> None:
    """A chat bot's HMAC-signed callback: only mapped chat users decide, as their mapped
    identity (never the requester's), within the timestamp window, once."""
    from helpers import serve_app
    from helpers import mcp_call, team_tokens, visible

    from opsmcp.transport.chat_callback import sign

    tokens = team_tokens(tmp_path)
    secret = b"chat-callback-secret-0123456789"
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                             tokens_file=tmp_path / "tokens.jsonl", chat_callback_secret=SecretStr(secret.decode()),
                             chat_approvers=["U1=lead", "U2=agent"])
    seed_aws(settings, build_scenario(), metrics=False)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")

    def signed(body: dict[str, Any], at: float | None = None, key: bytes = secret) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        stamp = str(int(at if at is not None else time.time()))
        return {"content": raw, "headers": {"X-Opsmcp-Timestamp": stamp, "X-Opsmcp-Signature": sign(key, stamp, raw),
                                            "Content-Type": "application/json"}}

    with serve_app(settings) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        first = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                            max_messages=5))["approval_id"]
        second = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                             max_messages=1))["approval_id"]
        approve = {"id": first, "action": "approve", "user": "U1"}
        assert http.post("/webhooks/approvals", **signed(approve, key=b"another-secret")).status_code == 401
        assert http.post("/webhooks/approvals", **signed(approve, at=time.time() - 3600)).status_code == 401
        unsigned = http.post("/webhooks/approvals", json=approve)
        assert unsigned.status_code == 401
        stranger = http.post("/webhooks/approvals", **signed(dict(approve, user="U9")))
        assert stranger.status_code == 403 and "OPSMCP_CHAT_APPROVERS" in stranger.json()["error"]
        itself = http.post("/webhooks/approvals", **signed(dict(approve, user="U2")))
        assert itself.status_code == 403 and "may not decide it" in itself.json()["error"]
        once = signed(approve)
        done = http.post("/webhooks/approvals", **once)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "done" and done.json()["approver"] == "lead" and done.json()["result"][
            "moved"] == 5
        replay = http.post("/webhooks/approvals", **once)
        assert replay.status_code == 409
        denied = http.post("/webhooks/approvals", **signed({"id": second, "action": "deny", "user": "U1",
                                                            "reason": "clicked deny in chat"}))
        assert denied.status_code == 200 and denied.json()["status"] == "denied"
        assert http.post("/webhooks/approvals", **signed({"id": second, "action": "drop", "user": "U1"})
                         ).status_code == 400
    assert visible(sqs, DLQ) == 3
