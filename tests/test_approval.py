"""The approval flow holds a real write to the preview the user saw: slow answers, other
callers, approval tokens (tampered, expired, replayed, another replica), the ``prompt`` mode,
and the bounded preview cache."""

from __future__ import annotations

import contextlib
import json
import re
import types
from typing import Any

import boto3
import pytest
from helpers import Things, ToolFailed, call, make_settings, visible
from mcp import Client
from mcp.types import ElicitResult
from pydantic import SecretStr

from opsmcp.calls.approval import PreviewCache, Shown, args_digest
from opsmcp.calls.approval_tokens import ApprovalTokens
from opsmcp.calls.audit import FileAudit, read_tail
from opsmcp.calls.identity import caller
from opsmcp.sandbox.scenario import build_scenario
from opsmcp.sandbox.seed import seed_aws
from opsmcp.server import build_server, register_toolset

DLQ = "order-cancellation-queue-dlq"
TOKEN_IN_ERROR = re.compile(r'approval_token="([^"]+)"')


class Clock:
    """A clock the test moves (epoch-like seconds); never sleeps."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now




def _late_dead_letters(sqs: Any, n: int = 3) -> None:
    url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"late": i}))


@contextlib.asynccontextmanager
async def as_caller(subject: str, server: Any, **kwargs: Any):
    """An in-memory client whose calls run as ``subject`` (what the HTTP transport sets)."""
    reset = caller.set(subject)
    try:
        async with Client(server, **kwargs) as client:
            yield client
    finally:
        caller.reset(reset)


def _answering(prompts: list[str], before_answer: Any = None):
    async def elicit(context: Any, params: Any) -> ElicitResult:
        prompts.append(params.message)
        if before_answer is not None:
            before_answer(len(prompts))
        return ElicitResult(action="accept", content={"approve": True})

    return elicit


@pytest.fixture
def seeded_writes(fresh_moto, tmp_path):
    """A seeded moto server and a writes-enabled server on it whose approval clock the test moves."""
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, toolsets=["queues"],
                             write_approval="prompt-or-confirm")
    seed_aws(settings, build_scenario(), metrics=False)
    server, runtime = build_server(settings)
    clock = Clock()
    runtime.approvals.set_clock(clock)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    return types.SimpleNamespace(settings=settings, server=server, runtime=runtime, clock=clock, sqs=sqs)


# ----------------------------------------------------------------- slow approvals ------

async def test_legacy_answer_after_120_s_is_held_to_the_preview_seen(seeded_writes):
    """The prompt said "Move 8"; the user answers 200 s later, after three more dead letters
    arrived: 8 move, 3 stay (the first version moved 11 once the 120 s cache had expired)."""
    w = seeded_writes
    server, clock, sqs = w.server, w.clock, w.sqs
    prompts: list[str] = []

    def slow_user(_: int) -> None:
        clock.now += 200
        _late_dead_letters(sqs)

    async with Client(server, elicitation_callback=_answering(prompts, slow_user), mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        out = await call(client, "redrive_dlq", queue=DLQ, dry_run=False)
    assert len(prompts) == 1 and "Move 8 message(s)" in prompts[0] and "at most 8 (matched)" in prompts[0]
    assert out["moved"] == 8 and out["remaining"] == 3
    assert visible(sqs, DLQ) == 3


async def test_stateless_round_after_120_s_asks_again_when_the_preview_changed(seeded_writes):
    """2026-07-28 re-runs the resolvers on every round: once the cached preview aged out and
    the DLQ grew, the answer to "Move 8" is not taken for "Move 11": the user is asked again,
    and the move is held to what that second prompt showed."""
    w = seeded_writes
    server, clock, sqs = w.server, w.clock, w.sqs
    prompts: list[str] = []

    def slow_user(n: int) -> None:
        if n == 1:
            clock.now += 200
            _late_dead_letters(sqs)

    async with Client(server, elicitation_callback=_answering(prompts, slow_user)) as client:
        assert client.protocol_version != "2025-11-25"
        out = await call(client, "redrive_dlq", queue=DLQ, dry_run=False, max_messages=100)
    assert [re.search(r"Move (\d+)", p).group(1) for p in prompts] == ["8", "11"]  # type: ignore[union-attr]
    assert out["moved"] == 11 and visible(sqs, DLQ) == 0


async def test_stateless_round_within_the_cache_moves_what_was_shown(seeded_writes):
    w = seeded_writes
    server, sqs = w.server, w.sqs
    prompts: list[str] = []
    async with Client(server, elicitation_callback=_answering(prompts, lambda n: _late_dead_letters(sqs))) as client:
        out = await call(client, "redrive_dlq", queue=DLQ, dry_run=False)
    assert len(prompts) == 1 and "Move 8" in prompts[0]
    assert out["moved"] == 8 and visible(sqs, DLQ) == 3


# ----------------------------------------------------------------- tokens -------------

async def test_dry_run_token_moves_at_most_the_preview_on_another_replica(seeded_writes, tmp_path):
    """A dry run on replica A hands out a token; replica B (same OPSMCP_APPROVAL_SECRET, its own
    empty preview cache) accepts it, holds the move to the previewed 8, and it works once."""
    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    shared = dict(approval_secret=SecretStr("s" * 40))
    a, _ = build_server(settings.model_copy(update=shared))
    b, _ = build_server(settings.model_copy(update=shared))
    other, _ = build_server(settings.model_copy(update=dict(approval_secret=SecretStr("t" * 40))))
    async with Client(a) as on_a:
        preview = await call(on_a, "redrive_dlq", queue=DLQ)
    token = preview["approval"]["token"]
    _late_dead_letters(sqs)
    async with Client(other) as on_other:
        with pytest.raises(ToolFailed, match="approval_token is not valid"):
            await call(on_other, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True, approval_token=token)
    async with Client(b) as on_b:
        out = await call(on_b, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True, approval_token=token)
        assert out["moved"] == 8 and out["remaining"] == 3
        with pytest.raises(ToolFailed, match="already used"):
            await call(on_b, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True, approval_token=token)
    assert visible(sqs, DLQ) == 3
    outcomes = [r for r in read_tail(settings.audit_log_path, 50) if r["phase"] == "outcome"]
    assert ("complete", "approval_token") in [(r["outcome"], r["approval"]) for r in outcomes]


async def test_another_caller_cannot_use_a_preview_or_a_token(seeded_writes):
    w = seeded_writes
    settings, server, sqs = w.settings, w.server, w.sqs
    async with as_caller("alice", server) as alice:
        preview = await call(alice, "redrive_dlq", queue=DLQ)
    token = preview["approval"]["token"]
    async with as_caller("bob", server) as bob:
        with pytest.raises(ToolFailed, match="issued to another caller"):
            await call(bob, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True, approval_token=token)
        # alice's cached preview does not approve bob's confirm=true either: bob gets his own preview
        with pytest.raises(ToolFailed, match=r"(?s)needs the user's approval.*Move 8"):
            await call(bob, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True)
    assert visible(sqs, DLQ) == 8
    async with as_caller("alice", server) as alice:
        out = await call(alice, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True, approval_token=token)
    assert out["moved"] == 8
    records = read_tail(settings.audit_log_path, 50)
    assert {r["caller"] for r in records} == {"alice", "bob"}


async def test_tampered_expired_and_mismatched_tokens_are_refused(seeded_writes):
    w = seeded_writes
    settings, server, runtime, clock, sqs = w.settings, w.server, w.runtime, w.clock, w.sqs
    async with Client(server) as client:
        with pytest.raises(ToolFailed) as needs:
            await call(client, "redrive_dlq", queue=DLQ, dry_run=False)
        token = TOKEN_IN_ERROR.search(str(needs.value)).group(1)  # type: ignore[union-attr]
        prefix, payload, mac = token.split(".")
        body = json.loads(__import__("base64").urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        body["b"] = 10_000  # a bigger bound, same signature
        forged = __import__("base64").urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        real = dict(queue=DLQ, dry_run=False, confirm=True)
        with pytest.raises(ToolFailed, match="approval_token is not valid"):
            await call(client, "redrive_dlq", **real, approval_token=f"{prefix}.{forged}.{mac}")
        with pytest.raises(ToolFailed, match="approves other arguments"):
            await call(client, "redrive_dlq", **dict(real, max_messages=5), approval_token=token)
        clock.now += runtime.settings.approval_ttl_seconds + 1
        with pytest.raises(ToolFailed, match="approval_token expired"):
            await call(client, "redrive_dlq", **real, approval_token=token)
    assert visible(sqs, DLQ) == 8
    refused = [r for r in read_tail(settings.audit_log_path, 50) if r["outcome"] == "refused: approval token"]
    assert len(refused) == 3 and all(r["note"] for r in refused)


def test_token_and_cache_units():
    clock = Clock()
    tokens = ApprovalTokens(b"k" * 32, ttl=60, clock=clock)
    digest = args_digest("redrive_dlq", {"queue": "q", "dry_run": True, "confirm": True}, "dry_run")
    assert digest == args_digest("redrive_dlq", {"queue": "q", "dry_run": False}, "dry_run")
    grant = tokens.verify(tokens.mint("redrive_dlq", digest, 8, "alice")[0], "redrive_dlq", digest, "alice")
    assert grant.bound == 8
    cache = PreviewCache(max_entries=5, max_age=120, clock=clock)
    for i in range(50):
        cache.put("alice", "t", str(i), Shown("x", i))
    assert len(cache) == 5 and cache.get("alice", "t", "49") is not None and cache.get("alice", "t", "0") is None
    assert cache.get("bob", "t", "49") is None
    clock.now += 121
    assert cache.get("alice", "t", "49") is None
    cache.put("alice", "t", "new", Shown("y", 1))  # pruning happens on insert
    assert len(cache) == 1


# ----------------------------------------------------------------- prompt mode --------

async def test_prompt_mode_refuses_confirm_and_needs_an_answered_prompt(seeded_writes):
    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    server, _ = build_server(settings.model_copy(update=dict(write_approval="prompt")))
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "confirm" not in tools["redrive_dlq"].input_schema["properties"]
        preview = await call(client, "redrive_dlq", queue=DLQ)
        assert not any("approval_token" in n for n in preview["notes"])
        with pytest.raises(ToolFailed, match=r"only through an approval prompt.*cannot show one"):
            await call(client, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True)
    assert visible(sqs, DLQ) == 8
    prompts: list[str] = []
    async with Client(server, elicitation_callback=_answering(prompts)) as client:
        assert (await call(client, "redrive_dlq", queue=DLQ, dry_run=False))["moved"] == 8


# ----------------------------------------------------------------- a fake write tool ---

def _things_server(tmp_path: Any, **overrides: Any) -> tuple[Any, Any, Things]:
    overrides.setdefault("write_approval", "prompt-or-confirm")
    settings = make_settings("http://127.0.0.1:9", tmp_path, allow_writes=True, toolsets=[], **overrides)
    server, runtime = build_server(settings)
    things = Things()
    register_toolset(server, runtime, "things", things)
    return server, runtime, things


@pytest.mark.slow  # 75 MB of arguments: the full tier only
async def test_huge_dry_runs_keep_the_audit_log_and_the_preview_cache_bounded(tmp_path):
    """75 dry runs with distinct 1 MB signatures: the audit file stays under 2 MB (values cut
    at 2 KB and marked), the cache keeps only short previews, and its size stays bounded."""
    server, runtime, _ = _things_server(tmp_path)
    runtime.approvals.previews.max_entries = 50
    async with Client(server) as client:
        for i in range(75):
            await call(client, "move_things", signature=f"{i:04d}" + "x" * 1_000_000)
    size = runtime.settings.audit_log_path.stat().st_size
    assert size < 2_000_000, size
    records = read_tail(runtime.settings.audit_log_path, 2)
    assert records[-1]["cut"] >= 1 and "[cut: " in records[-1]["arguments"]["signature"]
    cache = runtime.approvals.previews
    assert len(cache) == 50
    assert sum(len(shown.summary) for _, shown in cache._items.values()) < 50 * 4_100


async def test_long_write_writes_progress_records(tmp_path):
    server, runtime, things = _things_server(tmp_path)
    things.reports = 25
    async with Client(server) as client:
        preview = await call(client, "move_things")
        token = preview["approval"]["token"]
        out = await call(client, "move_things", dry_run=False, confirm=True, approval_token=token)
    assert out["moved"] == 8
    progress = [r for r in read_tail(runtime.settings.audit_log_path, 50) if r["phase"] == "progress"]
    assert [r["counts"]["progress"] for r in progress] == [1, 10, 20]
    assert progress[-1]["counts"]["total"] == 25 and progress[-1]["note"] == "moved 20"


async def test_unexpected_exceptions_become_tool_errors_in_the_choke_point_and_the_approval_step(tmp_path):
    server, _, things = _things_server(tmp_path)
    async with Client(server) as client:
        with pytest.raises(ToolFailed, match="Internal error in boom: RuntimeError: kaboom"):
            await call(client, "boom")
    things.fail = KeyError("lost")
    async with Client(server, elicitation_callback=_answering([])) as client:
        with pytest.raises(ToolFailed, match=r"Internal error while previewing move_things: KeyError.*Nothing was "
                                             "changed"):
            await call(client, "move_things", dry_run=False)
    assert things.available == 8


async def test_a_lost_outcome_record_is_reported_in_the_result(tmp_path):
    from opsmcp.errors import OpsError

    class LosesOutcomes(FileAudit):
        async def append(self, record: dict[str, Any]) -> None:
            if record["phase"] == "outcome":
                raise OpsError("disk full")
            await super().append(record)

    server, runtime, _ = _things_server(tmp_path)
    runtime.trail.sink = LosesOutcomes(runtime.settings.audit_log_path)
    async with Client(server) as client:
        out = await call(client, "move_things")
    assert any("outcome audit record could not be written" in n for n in out["notes"])
    assert [r["phase"] for r in read_tail(runtime.settings.audit_log_path, 5)] == ["intent"]


async def test_a_token_is_single_use_across_replicas_sharing_the_audit_table(seeded_writes):
    """Two replicas with one secret and one DynamoDB audit table: a token spent on A is
    refused on B (B's own memory has never seen it; the table's conditional write has)."""
    from opsmcp.sandbox.seed import create_audit_table

    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    ddb = boto3.client("dynamodb", endpoint_url=settings.aws_endpoint_url, region_name="us-east-1")
    create_audit_table(ddb, "opsmcp-audit")
    shared = settings.model_copy(update=dict(approval_secret=SecretStr("s" * 40), audit_table="opsmcp-audit"))
    a, runtime_a = build_server(shared)
    b, _ = build_server(shared)
    async with Client(a) as on_a:
        preview = await call(on_a, "redrive_dlq", queue=DLQ, max_messages=3)
        token = preview["approval"]["token"]
        real = dict(queue=DLQ, max_messages=3, dry_run=False, confirm=True, approval_token=token)
        assert (await call(on_a, "redrive_dlq", **real))["moved"] == 3
    async with Client(b) as on_b:
        with pytest.raises(ToolFailed, match="already used"):
            await call(on_b, "redrive_dlq", **real)
    assert visible(sqs, DLQ) == 5
    phases = [r["phase"] for r in await runtime_a.audit.tail(100)]  # type: ignore[union-attr]
    assert "claimed" not in phases and phases.count("outcome") >= 3


async def test_elicitation_works_with_a_configured_secret(seeded_writes):
    """With OPSMCP_APPROVAL_SECRET the SDK seals request_state under a key from it (so a
    stateless round may land on another replica); the multi-round approval still works."""
    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    server, _ = build_server(settings.model_copy(update=dict(approval_secret=SecretStr("s" * 40))))
    prompts: list[str] = []
    async with Client(server, elicitation_callback=_answering(prompts)) as client:
        assert (await call(client, "redrive_dlq", queue=DLQ, dry_run=False))["moved"] == 8
    assert len(prompts) == 1 and visible(sqs, DLQ) == 0


async def test_a_stateless_approval_round_may_land_on_another_replica(seeded_writes):
    """2026-07-28: the prompt comes from replica A, the answer goes to replica B with A's sealed
    request_state. B (same OPSMCP_APPROVAL_SECRET) opens it, re-runs the preview, finds the
    same question and moves what was shown; a replica with another secret refuses the state."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import InputRequiredResult

    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    a, _ = build_server(settings.model_copy(update=dict(approval_secret=SecretStr("s" * 40))))
    b, _ = build_server(settings.model_copy(update=dict(approval_secret=SecretStr("s" * 40))))
    other, _ = build_server(settings.model_copy(update=dict(approval_secret=SecretStr("t" * 40))))
    args = {"queue": DLQ, "dry_run": False}
    async with Client(a, elicitation_callback=_answering([])) as on_a:
        first = await on_a.session.call_tool("redrive_dlq", args, allow_input_required=True)
    assert isinstance(first, InputRequiredResult)
    ((key, request),) = first.input_requests.items()
    assert "Move 8" in request.params.message  # type: ignore[union-attr]
    answers = {key: ElicitResult(action="accept", content={"approve": True})}
    async with Client(other, elicitation_callback=_answering([])) as on_other:
        with pytest.raises(MCPError):
            await on_other.call_tool("redrive_dlq", args, input_responses=answers, request_state=first.request_state)
    assert visible(sqs, DLQ) == 8
    async with Client(b, elicitation_callback=_answering([])) as on_b:
        out = await on_b.call_tool("redrive_dlq", args, input_responses=answers, request_state=first.request_state)
    assert not out.is_error and out.structured_content["moved"] == 8  # type: ignore[index]


# ----------------------------------------------------------------- issue 19: approval safety

async def test_a_token_stays_spent_after_a_restart_with_the_file_audit(seeded_writes):
    """A token used once is refused by a new server process on the same data dir (a restart,
    or another process sharing the file audit): the claim lives beside the audit file."""
    settings, sqs = seeded_writes.settings, seeded_writes.sqs
    shared = settings.model_copy(update=dict(approval_secret=SecretStr("s" * 40)))
    before, _ = build_server(shared)
    async with Client(before) as client:
        preview = await call(client, "redrive_dlq", queue=DLQ, max_messages=3)
        real = dict(queue=DLQ, max_messages=3, dry_run=False, confirm=True, approval_token=preview["approval"]["token"])
        assert (await call(client, "redrive_dlq", **real))["moved"] == 3
    after, _ = build_server(shared)  # the restarted server: empty memory, same data dir
    async with Client(after) as client:
        with pytest.raises(ToolFailed, match="already used"):
            await call(client, "redrive_dlq", **real)
    assert visible(sqs, DLQ) == 5
    assert len(list(FileAudit(settings.audit_log_path).claims.iterdir())) == 1


def test_file_audit_claims_are_atomic_and_pruned_after_expiry(tmp_path):
    import time

    one, two = FileAudit(tmp_path / "audit.jsonl"), FileAudit(tmp_path / "audit.jsonl")
    later = time.time() + 600
    assert one._claim("n1", later) and not two._claim("n1", later) and not one._claim("n1", later)
    assert two._claim("n2", time.time() - 1)  # already expired: pruned by a later claim
    one._prune_claims(now=time.time() + 120)  # pruning runs at most once a minute
    assert len(list(one.claims.iterdir())) == 1


async def test_a_preview_of_nothing_approves_nothing(seeded_writes):
    """An empty DLQ previews "0"; three messages arrive; the user accepts the prompt: nothing
    moves (it used to clamp the bound of 0 to 1 and move one). The confirm path hands out
    no token for it, and a token bound to 0 moves nothing either."""
    w = seeded_writes
    sqs = w.sqs
    dlq_url = sqs.create_queue(QueueName="empty-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName="empty", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
    preview = await _call_plain(w.server, queue="empty-dlq")
    assert preview["matched"] == 0 and preview["approval"] is None
    assert any("nothing to approve" in n for n in preview["notes"])
    prompts: list[str] = []
    async with Client(w.server, elicitation_callback=_answering(prompts)) as client:
        await call(client, "redrive_dlq", queue="empty-dlq")  # the preview the user saw: 0
        for i in range(3):
            sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"late": i}))
        with pytest.raises(ToolFailed, match="nothing to change"):
            await call(client, "redrive_dlq", queue="empty-dlq", dry_run=False)
    assert prompts == [] and visible(sqs, "empty-dlq") == 3
    # A token bound to 0 (minted as the confirm path would for a preview of 0) moves nothing.
    digest = args_digest("redrive_dlq", {"queue": "empty-dlq", "target": None, "max_messages": 1000,
                                         "signature": None}, "dry_run")
    token, _ = w.runtime.approvals.tokens.mint("redrive_dlq", digest, 0, "stdio")
    async with Client(w.server) as client:
        with pytest.raises(ToolFailed, match="nothing to change"):
            await call(client, "redrive_dlq", queue="empty-dlq", dry_run=False, confirm=True, approval_token=token)
    assert visible(sqs, "empty-dlq") == 3 and visible(sqs, "empty") == 0


async def _call_plain(server: Any, **arguments: Any) -> dict[str, Any]:
    async with Client(server) as client:
        return await call(client, "redrive_dlq", **arguments)


async def test_confirm_without_a_token_sent_twice_changes_nothing(seeded_writes):
    """The first refusal used to store a preview that the second identical call then used."""
    w = seeded_writes
    async with Client(w.server) as client:
        for _ in range(2):
            with pytest.raises(ToolFailed, match=r"(?s)needs the user's approval.*approval_token of the preview"):
                await call(client, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True)
        preview = await call(client, "redrive_dlq", queue=DLQ)  # a dry run does not count as approval either
        with pytest.raises(ToolFailed, match="needs the user's approval"):
            await call(client, "redrive_dlq", queue=DLQ, dry_run=False, confirm=True)
    assert preview["matched"] == 8 and visible(w.sqs, DLQ) == 8


async def test_the_approval_token_is_a_structured_field_of_the_result(seeded_writes):
    w = seeded_writes
    async with Client(w.server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        schema = tools["redrive_dlq"].output_schema
        preview = await call(client, "redrive_dlq", queue=DLQ)
    assert "approval" in schema["properties"]  # type: ignore[index]
    offer = preview["approval"]
    assert set(offer) == {"token", "expires_at", "bound"} and offer["bound"] == 8
    assert offer["token"].startswith("opsa1.") and offer["expires_at"].endswith("Z")
    assert not any(offer["token"] in n for n in preview["notes"])  # not text the client must parse
