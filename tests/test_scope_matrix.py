"""One scope policy for every MCP method, as a matrix: method x the caller's scopes, over real
streamable HTTP with the real `mcp` client (both protocol eras), identities from a tokens
file and from JWTs.

Regression (issue 19 item 8): a token with only `ops:write` (or a JWT with `scope: ""`) saw
no read tools but could read `opsmcp://queues/order-queue`, complete every queue name, get
prompts and subscribe. The AWS endpoint is a closed port: a request that gets past the
policy fails at the backend (or answers from the catalog), which is not a refusal.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, ResourceTemplateReference
from helpers import DROP, INIT, mcp_post, mcp_session, oauth, serve_app, settings_for

from opsmcp.surface.tool_visibility import SCOPE_REFUSED
from opsmcp.transport.auth import hash_token

pytestmark = pytest.mark.anyio

QUEUE = "opsmcp://queues/order-queue"
READ, WRITE = "ops:read", "ops:write"


def tokens_file(path: Path, identities: dict[str, list[str]]) -> dict[str, str]:
    """Write a tokens file with one entry per identity (scopes as given, an empty list too);
    return {identity: token}."""
    tokens = {name: f"token-{name}-{'x' * 24}" for name in identities}
    path.write_text("".join(json.dumps({"subject": name, "scopes": scopes, "sha256": hash_token(tokens[name])}) + "\n"
                            for name, scopes in identities.items()))
    return tokens


async def outcome(call: Any) -> str:
    """'refused' (the policy's JSON-RPC error or a scope tool error), 'empty' (a list result
    with nothing in it) or 'answered' (anything else: a result, or a backend or lookup error)."""
    try:
        result = await call()
    except MCPError as exc:
        return "refused" if exc.code == SCOPE_REFUSED else "answered"
    if getattr(result, "is_error", False):
        text = " ".join(getattr(c, "text", "") for c in result.content)
        return "refused" if "needs scope" in text or "Refused:" in text else "answered"
    for field in ("tools", "resources", "resource_templates", "prompts"):
        if isinstance(getattr(result, field, None), list):
            return "answered" if getattr(result, field) else "empty"
    return "answered"


def methods(client: Any) -> dict[str, Any]:
    """Every MCP method a client sends after connecting, as name -> zero-argument coroutine."""
    queue_ref = ResourceTemplateReference(type="ref/resource", uri="opsmcp://queues/{name}")
    return {
        "ping": lambda: client.send_ping(),
        "tools/list (read tools)": lambda: _only(client, read=True),
        "tools/list (write tools)": lambda: _only(client, read=False),
        "tools/call list_queues": lambda: client.call_tool("list_queues", {}),
        "tools/call redrive_dlq": lambda: client.call_tool("redrive_dlq", {"queue": "order-queue-dlq"}),
        "tools/call unknown": lambda: client.call_tool("no_such_tool", {}),
        "resources/list": lambda: client.list_resources(),
        "resources/templates/list": lambda: client.list_resource_templates(),
        "resources/read runbook": lambda: client.read_resource("opsmcp://runbooks/dlq-growing"),
        "resources/read queue": lambda: client.read_resource(QUEUE),
        "prompts/list": lambda: client.list_prompts(),
        "prompts/get": lambda: client.get_prompt("triage_dlq", {"queue": "order-queue-dlq"}),
        "completion/complete prompt": lambda: client.complete(
            PromptReference(type="ref/prompt", name="triage_dlq"), {"name": "queue", "value": "or"}),
        "completion/complete template": lambda: client.complete(queue_ref, {"name": "name", "value": "or"}),
        "logging/setLevel": lambda: client.set_logging_level("info"),
    }


async def _only(client: Any, read: bool) -> Any:
    """tools/list narrowed to the read (or write) tools, so each side is a cell of its own."""
    listed = await client.list_tools()
    writes = {"redrive_dlq", "run_playbook"}
    return listed.model_copy(update={"tools": [t for t in listed.tools if (t.name in writes) != read]})


def expected(method: str, granted: set[str]) -> str:
    """What the policy promises for ``method`` and a caller with scopes ``granted``."""
    if method == "ping":
        return "answered"
    if method == "tools/list (write tools)":
        return "answered" if WRITE in granted else "empty"
    if method == "tools/call redrive_dlq":
        return "answered" if WRITE in granted else "refused"
    if method == "tools/call unknown":
        return "answered" if granted & {READ, WRITE} else "refused"
    if READ in granted:
        return "answered"
    return "empty" if method.endswith("/list") or "tools/list" in method else "refused"


async def run_matrix(base: str, tokens: dict[str, tuple[str, set[str]]]) -> list[str]:
    """Every method x identity x era; return the cells that differ from :func:`expected`."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    wrong = []
    for who, (token, granted) in tokens.items():
        for mode in ("auto", "legacy"):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode,
                              cache=None) as client:
                cells = methods(client)
                if mode == "legacy":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cells["resources/subscribe"] = lambda c=client: c.subscribe_resource(QUEUE)
                        cells["resources/unsubscribe"] = lambda c=client: c.unsubscribe_resource(QUEUE)
                else:
                    cells["subscriptions/listen"] = lambda c=client: _listen(c)
                for method, call in cells.items():
                    got = await outcome(call)
                    want = expected(method, granted)
                    if got != want:
                        wrong.append(f"{who} [{mode}] {method}: {got}, expected {want}")
    return wrong


async def _listen(client: Any) -> Any:
    async with client.listen(resource_subscriptions=[QUEUE]) as sub:
        return sub


async def test_every_method_against_every_scope_set(tmp_path: Path) -> None:
    identities = {"nobody": [], "alertmanager": ["alerts:write"], "reader": [READ], "writer-only": [WRITE],
                  "operator": [READ, WRITE]}
    tokens = tokens_file(tmp_path / "tokens.jsonl", identities)
    with oauth(tmp_path, tokens_file=tmp_path / "tokens.jsonl") as (settings, mint, _), \
            serve_app(settings) as (base, _):
        cases = {name: (tokens[name], set(scopes)) for name, scopes in identities.items()}
        cases |= {"jwt scope ''": (mint(scope=""), set()), "jwt scope null": (mint(scope=None), set()),
                  "jwt scp [ops:write]": (mint(scope=DROP, scp=[WRITE]), {WRITE}),
                  "jwt scope 'ops:read'": (mint(), {READ})}
        wrong = await run_matrix(base, cases)
        assert not wrong, "\n".join(wrong)
        # a JWT whose scope is a number is not a valid token: 401 before any method runs
        assert mcp_post(base, INIT, Authorization=f"Bearer {mint(scope=5)}").status_code == 401
        assert httpx.get(f"{base}/events", headers={"Authorization": f"Bearer {tokens['writer-only']}"},
                         timeout=10).status_code == 403


async def test_refusal_names_caller_method_and_scope(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path / "tokens.jsonl", {"eve": [], "wanda": [WRITE]})
    with serve_app(settings_for(tmp_path, tokens_file=tmp_path / "tokens.jsonl")) as (base, _):
        for who in ("eve", "wanda"):
            async with await mcp_session(base, tokens[who]) as client:
                with pytest.raises(MCPError) as refused:
                    await client.read_resource(QUEUE)
            assert refused.value.code == SCOPE_REFUSED
            message = refused.value.message
            assert f"{who} may not call resources/read" in message and "needs scope ops:read" in message, message
            assert (refused.value.error.data or {}).get("required_scope") == READ
