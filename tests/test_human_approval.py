"""OPSMCP_WRITE_APPROVAL=human: a real write becomes an approval request that only another
person decides. The requester alone changes nothing (preview + confirm + token, replays, a
forged id, elicitation); an approval runs the previewed write once, held to its bound; a
denial, an expiry, a restart and a waiting client; against a real moto server, in memory
and over the real HTTP app (the API the console and the CLI call)."""

from __future__ import annotations

import contextlib
import json
import threading
import types
from typing import Any

import anyio
import boto3
import httpx
import pytest
from helpers import ToolFailed, call, make_settings
from mcp import Client
from mcp.types import ElicitResult
from pydantic import SecretStr

from opsmcp.calls.audit import read_tail
from opsmcp.calls.identity import ALL_SCOPES, caller, scopes
from opsmcp.sandbox.scenario import build_scenario
from opsmcp.sandbox.seed import seed_aws
from opsmcp.server import build_server
from helpers import mcp_call, team_tokens, visible

DLQ = "order-cancellation-queue-dlq"
SOURCE = "order-cancellation-queue"


def _late_dead_letters(sqs: Any, n: int = 3) -> None:
    url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"late": i}))


@contextlib.contextmanager
def acting_as(subject: str, granted: frozenset[str] = ALL_SCOPES):
    """Run as ``subject`` with ``granted`` scopes (what the HTTP transport sets per request)."""
    who, what = caller.set(subject), scopes.set(granted)
    try:
        yield
    finally:
        caller.reset(who)
        scopes.reset(what)


@contextlib.asynccontextmanager
async def client_as(subject: str, server: Any, **kwargs: Any):
    with acting_as(subject):
        async with Client(server, **kwargs) as client:
            yield client


async def _accept(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"approve": True})


@pytest.fixture
def human(fresh_moto, tmp_path):
    """A seeded moto server and a writes-enabled server in mode human (file store)."""
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                             approval_secret=SecretStr("h" * 40))
    seed_aws(settings, build_scenario(), metrics=False)
    server, runtime = build_server(settings)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    return types.SimpleNamespace(settings=settings, server=server, runtime=runtime, sqs=sqs)


async def test_the_requester_alone_changes_nothing(human):
    """Everything an agent can do by itself: dry run, real call, confirm=true with a valid
    token (from a prompt-or-confirm server with the same secret), replays, an auto-accepted
    elicitation, a forged approval id, approving its own request. Nothing moves."""
    h = human
    other, _ = build_server(h.settings.model_copy(update=dict(write_approval="prompt-or-confirm")))
    async with client_as("agent", other) as on_other:
        token = (await call(on_other, "redrive_dlq", queue=DLQ))["approval"]["token"]
    ids = set()
    async with client_as("agent", h.server, elicitation_callback=_accept) as agent:
        schema = {t.name: t for t in (await agent.list_tools()).tools}["redrive_dlq"].input_schema
        assert not {"confirm", "approval_token"} & set(schema["properties"])
        preview = await call(agent, "redrive_dlq", queue=DLQ)
        assert preview["status"] == "dry_run" and preview["approval"] is None
        for extra in ({}, {"confirm": True, "approval_token": token}, {}, {"confirm": True}):
            if extra:  # arguments this server's write tools do not have: refused (strict arguments)
                with pytest.raises(ToolFailed, match="confirm is not an argument of redrive_dlq"):
                    await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, **extra)
                continue
            out = await call(agent, "redrive_dlq", queue=DLQ, dry_run=False)
            assert out["status"] == "pending_approval" and out["moved"] == 0 and out["matched"] == 8
            assert out["approval"]["token"] is None and out["approval"]["bound"] == 8
            ids.add(out["approval_id"])
        for forged in ("apr-" + "0" * 32, "../../audit", "apr-" + "f" * 31 + "g", ""):
            with pytest.raises(ToolFailed, match=r"No approval request|approval_id"):
                await call(agent, "get_approval", approval_id=forged)
        assert (await call(agent, "get_approval", approval_id=sorted(ids)[0]))["status"] == "pending"
    assert len(ids) == 2 and visible(h.sqs, DLQ) == 8
    desk = h.runtime.approvals.desk
    with acting_as("agent"):  # its own identity, even with ops:approve, may not approve its requests
        for request_id in ids:
            with pytest.raises(Exception, match="may not decide it"):
                await desk.decide(request_id, True)
    with acting_as("agent-without-approve", frozenset({"ops:read", "ops:write"})), \
            pytest.raises(Exception, match="needs scope ops:approve"):
        await desk.decide(sorted(ids)[0], True)
    assert visible(h.sqs, DLQ) == 8 and visible(h.sqs, SOURCE) == 0
    assert {r.status for r in await desk.list("all")} == {"pending"}


async def test_an_approval_runs_the_previewed_write_once_held_to_its_bound(human):
    h = human
    async with client_as("agent", h.server) as agent:
        pending = await call(agent, "redrive_dlq", queue=DLQ, dry_run=False)
    request_id = pending["approval_id"]
    _late_dead_letters(h.sqs)  # three more arrive after the preview "Move 8"
    desk = h.runtime.approvals.desk
    with acting_as("lead"):
        done = await desk.decide(request_id, True)
        with pytest.raises(Exception, match="is done by lead"):
            await desk.decide(request_id, True)
        with pytest.raises(Exception, match="is done by lead"):
            await desk.decide(request_id, False, "too late")
    assert done.status == "done" and done.approver == "lead" and done.result["moved"] == 8
    assert done.result["remaining"] == 3 and visible(h.sqs, DLQ) == 3
    async with client_as("agent", h.server) as agent:
        seen = await call(agent, "get_approval", approval_id=request_id)
    assert seen["status"] == "done" and seen["result"]["moved"] == 8 and seen["approver"] == "lead"
    assert seen["bound"] == {"argument": "max_messages", "value": 8}
    records = [r for r in read_tail(h.settings.audit_log_path, 100) if r["call_id"] == request_id]
    assert "progress" in [r["phase"] for r in records]  # the write's progress is audited
    records = [r for r in records if r["phase"] != "progress"]
    assert [r["phase"] for r in records] == ["requested", "approved", "intent", "outcome"]
    assert [r["caller"] for r in records] == ["agent", "lead", "agent", "agent"]
    assert records[-1]["approver"] == "lead" and records[-1]["approval"] == "human"
    assert records[-1]["counts"]["moved"] == 8 and records[2]["arguments"]["max_messages"] == 8


async def test_a_denied_or_expired_request_says_so_and_changes_nothing(human):
    h = human
    clock = types.SimpleNamespace(now=1_000_000.0)
    h.runtime.approvals.set_clock(lambda: clock.now)
    async with client_as("agent", h.server) as agent:
        first = (await call(agent, "redrive_dlq", queue=DLQ, dry_run=False))["approval_id"]
        second = (await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=2))["approval_id"]
        desk = h.runtime.approvals.desk
        with acting_as("lead"):
            denied = await desk.decide(first, False, "not during the freeze\u0000\ud800")
        assert denied.status == "denied" and denied.reason == "not during the freeze ?"
        seen = await call(agent, "get_approval", approval_id=first)
        assert seen["status"] == "denied" and "DENIED" in seen["notes"][0] and seen["reason"].startswith("not during")
        clock.now += h.settings.approval_request_ttl_seconds + 1
        seen = await call(agent, "get_approval", approval_id=second)
        assert seen["status"] == "expired" and "EXPIRED" in seen["notes"][0]
        with acting_as("lead"), pytest.raises(Exception, match="is expired"):
            await desk.decide(second, True)
    assert visible(h.sqs, DLQ) == 8
    phases = [(r["phase"], r["call_id"]) for r in read_tail(h.settings.audit_log_path, 100)]
    assert ("denied", first) in phases and ("expired", second) in phases
    assert not any(p == "intent" and c in (first, second) for p, c in phases)


async def test_pending_requests_survive_a_restart(human):
    h = human
    async with client_as("agent", h.server) as agent:
        request_id = (await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=5))["approval_id"]
    restarted, runtime = build_server(h.settings)  # a new process on the same data dir
    async with client_as("agent", restarted) as agent:
        assert (await call(agent, "get_approval", approval_id=request_id))["status"] == "pending"
    with acting_as("lead"):
        done = await runtime.approvals.desk.decide(request_id, True)
    assert done.status == "done" and done.result["moved"] == 5 and visible(h.sqs, DLQ) == 3


async def test_a_preview_of_nothing_makes_no_request(human):
    h = human
    url = h.sqs.create_queue(QueueName="quiet-dlq")["QueueUrl"]
    arn = h.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    h.sqs.create_queue(QueueName="quiet", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
    async with client_as("agent", h.server) as agent:
        with pytest.raises(ToolFailed, match="nothing to change"):
            await call(agent, "redrive_dlq", queue="quiet-dlq", dry_run=False)
    assert await h.runtime.approvals.desk.list("all") == []


async def test_a_client_with_a_progress_token_waits_for_the_decision(fresh_moto, tmp_path):
    """With OPSMCP_APPROVAL_WAIT_SECONDS, a call that sent a progress token is told it waits,
    and answers with the write's result once a person approved; without a decision it
    answers pending when the wait ends."""
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                             approval_wait_seconds=30)
    seed_aws(settings, build_scenario(), metrics=False)
    server, runtime = build_server(settings)
    desk = runtime.approvals.desk
    reports: list[str] = []
    seen_pending = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append(message or "")
        seen_pending.set()

    async def approve_when_asked() -> None:
        await seen_pending.wait()
        (pending,) = await desk.list("pending")
        with acting_as("lead"):
            await desk.decide(pending.id, True)

    with anyio.fail_after(60):  # a call that did not wait would leave the approver waiting forever
        async with client_as("agent", server) as agent, anyio.create_task_group() as tg:
            tg.start_soon(approve_when_asked)
            res = await agent.call_tool("redrive_dlq", {"queue": DLQ, "dry_run": False, "max_messages": 4},
                                        progress_callback=on_progress)
    assert not res.is_error, res.content
    assert res.structured_content["moved"] == 4 and res.structured_content["status"] == "complete"
    assert reports and "waiting for a person to approve apr-" in reports[0] and "/#/approvals/apr-" in reports[0]
    runtime.settings.approval_wait_seconds = 1.0
    async with client_as("agent", server) as agent:
        with anyio.fail_after(30):
            res = await agent.call_tool("redrive_dlq", {"queue": DLQ, "dry_run": False},
                                        progress_callback=on_progress)
    assert res.structured_content["status"] == "pending_approval"


def test_two_stores_on_one_data_dir_let_one_of_two_racing_approvers_win(human):
    """Two processes' desks on one data dir (the file store's flock): both approve at once,
    in two threads; one write runs, the other approver gets a conflict."""
    h = human

    async def create() -> str:
        async with client_as("agent", h.server) as agent:
            return (await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=6))["approval_id"]

    request_id = anyio.run(create)
    _, other_runtime = build_server(h.settings)
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(2)

    def approve(name: str, runtime: Any) -> None:
        async def run() -> None:
            with acting_as(name):
                start.wait()
                try:
                    outcomes[name] = (await runtime.approvals.desk.decide(request_id, True)).status
                except Exception as exc:
                    outcomes[name] = type(exc).__name__

        anyio.run(run)

    threads = [threading.Thread(target=approve, args=("lead", h.runtime)),
               threading.Thread(target=approve, args=("deputy", other_runtime))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes.values()) == ["ApprovalConflict", "done"], outcomes
    assert visible(h.sqs, DLQ) == 2 and visible(h.sqs, SOURCE) == 6
    intents = [r for r in read_tail(h.settings.audit_log_path, 100)
               if r["phase"] == "intent" and r["call_id"] == request_id]
    assert len(intents) == 1


# ----------------------------------------------------------------- over HTTP -------------


def test_the_http_api_lists_shows_approves_and_denies(fresh_moto, tmp_path):
    from helpers import Feed, serve_app

    tokens = team_tokens(tmp_path)
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                             tokens_file=tmp_path / "tokens.jsonl", public_url="https://ops.example.com")
    seed_aws(settings, build_scenario(), metrics=False)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    bearer = {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
    with serve_app(settings) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        feed = Feed(http, f"{base}/events?types=approval", headers=bearer["viewer"])
        pending = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                              signature=None, target=None))
        request_id = pending["approval_id"]
        denied_id = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                                max_messages=1))["approval_id"]
        solo_id = anyio.run(lambda: mcp_call(base, tokens["solo"], "redrive_dlq", queue=DLQ, dry_run=False,
                                              max_messages=1))["approval_id"]
        listed = http.get("/api/approvals", headers=bearer["viewer"]).json()["approvals"]
        assert [r["id"] for r in listed] == [solo_id, denied_id, request_id]  # newest first
        shown = http.get(f"/api/approvals/{request_id}", headers=bearer["viewer"]).json()
        assert shown["status"] == "pending" and shown["requester"] == "agent" and shown["bound"] == {
            "argument": "max_messages", "value": 8}
        assert shown["console_url"] == f"https://ops.example.com/#/approvals/{request_id}"
        assert "Move 8 message(s)" in shown["preview"] and shown["arguments"]["queue"] == DLQ
        assert set(shown) == {"id", "tool", "arguments", "preview", "bound", "requester", "created_at", "expires_at",
                              "status", "approver", "reason", "decided_at", "result", "error", "console_url"}
        assert http.get("/api/approvals/apr-" + "0" * 32, headers=bearer["viewer"]).status_code == 404
        assert http.get("/api/approvals?status=nope", headers=bearer["viewer"]).status_code == 400
        assert http.get("/api/approvals").status_code == 401
        for who in ("viewer", "agent"):  # no ops:approve
            refused = http.post(f"/api/approvals/{request_id}/approve", headers=bearer[who])
            assert refused.status_code == 403 and "ops:approve" in refused.json()["error"]
        self_approval = http.post(f"/api/approvals/{solo_id}/approve", headers=bearer["solo"], json={})
        assert self_approval.status_code == 403 and "may not decide it" in self_approval.json()["error"]
        too_long = http.post(f"/api/approvals/{denied_id}/deny", headers=bearer["lead"], json={"reason": "x" * 501})
        assert too_long.status_code == 400
        assert http.post(f"/api/approvals/{denied_id}/deny", headers=bearer["lead"], content=b"[1]").status_code == 400
        denied = http.post(f"/api/approvals/{denied_id}/deny", headers=bearer["lead"], json={"reason": "freeze"})
        assert denied.status_code == 200 and denied.json()["status"] == "denied" and denied.json()["reason"] == "freeze"
        _late_dead_letters(sqs)
        done = http.post(f"/api/approvals/{request_id}/approve", headers=bearer["lead"], json={})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "done" and body["approver"] == "lead" and body["result"]["moved"] == 8
        again = http.post(f"/api/approvals/{request_id}/approve", headers=bearer["lead"])
        assert again.status_code == 409 and "is done by lead" in again.json()["error"]
        assert http.post(f"/api/approvals/{denied_id}/approve", headers=bearer["lead"]).status_code == 409
        assert http.post("/api/approvals/apr-" + "0" * 32 + "/approve", headers=bearer["lead"]).status_code == 404
        statuses = []
        while len(statuses) < 7:
            frame = feed.until(lambda f: f[1] == "approval")
            statuses.append((frame[2]["id"], frame[2]["status"]))
        assert [s for i, s in statuses if i == request_id] == ["pending", "approved", "executing", "done"]
        assert (denied_id, "denied") in statuses
        feed.close()
        polled = anyio.run(lambda: mcp_call(base, tokens["agent"], "get_approval", approval_id=request_id))
        assert polled["status"] == "done" and polled["result"]["remaining"] == 3
    assert visible(sqs, DLQ) == 3 and visible(sqs, SOURCE) == 8


def test_the_cli_lists_shows_approves_and_denies(fresh_moto, tmp_path):
    """`opsmcp approvals` against a running server, as the identity of the token it is given
    (flags, or OPSMCP_URL / OPSMCP_TOKEN)."""
    import os
    import subprocess
    import sys

    from helpers import serve_app

    tokens = team_tokens(tmp_path)
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"], write_approval="human",
                             tokens_file=tmp_path / "tokens.jsonl")
    seed_aws(settings, build_scenario(), metrics=False)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")

    def opsmcp(*args: str, token: str | None = None, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
        env |= {"OPSMCP_URL": url or base, "OPSMCP_TOKEN": token or tokens["viewer"]}
        return subprocess.run([sys.executable, "-m", "opsmcp.cli", "approvals", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    with serve_app(settings) as (base, _):
        first = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                            max_messages=5))["approval_id"]
        second = anyio.run(lambda: mcp_call(base, tokens["agent"], "redrive_dlq", queue=DLQ, dry_run=False,
                                             max_messages=1))["approval_id"]
        listed = opsmcp("list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert [line.split()[0] for line in lines] == [second, first]
        assert "pending redrive_dlq max_messages<=5 requested by agent" in lines[1] and "Move 5" in lines[1]
        shown = opsmcp("show", first)
        assert shown.returncode == 0 and "Move 5 message(s)" in shown.stdout and f"/#/approvals/{first}" in shown.stdout
        refused = opsmcp("approve", first)  # the viewer has no ops:approve
        assert refused.returncode == 1 and "403" in refused.stderr and "ops:approve" in refused.stderr
        approved = subprocess.run([sys.executable, "-m", "opsmcp.cli", "approvals", "approve", first, "--url", base,
                                   "--token", tokens["lead"]], capture_output=True, text=True, timeout=120,
                                  env={k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")},
                                  check=False)
        assert approved.returncode == 0, approved.stderr
        assert f"{first} done by lead" in approved.stdout and "moved=5" in approved.stdout
        again = opsmcp("approve", first, token=tokens["lead"])
        assert again.returncode == 1 and "409" in again.stderr and "is done by lead" in again.stderr
        denied = opsmcp("deny", second, "--reason", "not during the freeze", token=tokens["lead"])
        assert denied.returncode == 0 and f"{second} denied by lead" in denied.stdout
        assert "reason: not during the freeze" in denied.stdout
        every = json.loads(opsmcp("list", "--all", "--json").stdout)["approvals"]
        assert {(r["id"], r["status"]) for r in every} == {(first, "done"), (second, "denied")}
        assert opsmcp("list").stdout == ""
        unknown = opsmcp("show", "../../mcp")
        assert unknown.returncode == 1 and "404" in unknown.stderr
    down = opsmcp("list", url="http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:9" in down.stderr
    assert visible(sqs, DLQ) == 3


async def test_pending_requests_are_bounded_and_an_interrupted_write_is_marked_failed(human):
    import subprocess

    from opsmcp.calls.audit import HOST

    h = human
    h.runtime.settings.approval_max_pending = 2
    async with client_as("agent", h.server) as agent:
        ids = [(await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=n))["approval_id"]
               for n in (1, 2)]
        with pytest.raises(ToolFailed, match="2 approval requests are already pending"):
            await call(agent, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=3)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process has exited: the server that ran the write is gone
    store = h.runtime.approvals.desk.store
    await store.transition(ids[0], frozenset({"pending"}), {"status": "executing", "approver": "lead",
                                                            "executor": f"{HOST}:{gone.pid}"})
    found = await h.runtime.approvals.desk.get(ids[0])
    assert found is not None and found.status == "failed" and "interrupted" in (found.error or "")
    assert visible(h.sqs, DLQ) == 8


async def test_get_approval_answers_hostile_ids_with_a_tool_error(human):
    """Schema-valid and invalid hostile ids: never a crash, an internal error or a file read."""
    from mcp.server.mcpserver.exceptions import ToolError

    hostile = ["\ud800", "apr-" + "\ud800" * 32, "../../../../etc/passwd", "apr-" + "0" * 31 + "\x00",
               "x" * 1_000_000, "APR-" + "A" * 32, " apr-" + "0" * 32 + " ", "%2e%2e%2f"]
    h = human
    async with client_as("agent", h.server) as agent:
        for value in hostile:
            try:
                if value.encode("utf-8", "surrogatepass") != value.encode("utf-8", "replace"):
                    await h.server.call_tool("get_approval", {"approval_id": value})  # the SDK client cannot send it
                    raise AssertionError("no error")
                with pytest.raises(ToolFailed) as failed:
                    await call(agent, "get_approval", approval_id=value)
                text = str(failed.value)
            except ToolError as exc:
                text = str(exc)
            assert "Internal error" not in text and ("No approval request" in text or "approval_id" in text), text
