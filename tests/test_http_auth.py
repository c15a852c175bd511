"""The HTTP app's security: one Host/Origin policy on every route and bind address, bearer
tokens with subjects and scopes (shared token, tokens file, OAuth JWTs against a JWKS on
loopback), per-identity tool lists, liveness vs readiness, Prometheus metrics.

Servers run in this process (uvicorn in a thread, free loopback port); the AWS endpoint is
a closed port, so a call that gets past the scope checks fails with BackendUnavailable,
which proves where a refusal happened.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    DEAD_ENDPOINT,
    DROP,
    INIT,
    ISSUER,
    free_port,
    mcp_post,
    mcp_session,
    oauth,
    serve_app,
    settings_for,
)

from opsmcp.calls.runtime import Runtime
from opsmcp.cli import main as cli_main
from opsmcp.config import Settings
from opsmcp.server import build_server

STRONG = "s3cret-for-tests-0123456789abcdefghij"  # 36 characters: long enough for a non-loopback bind


def audit_records(settings: Settings) -> list[dict[str, Any]]:
    path = settings.audit_log_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------- C + D: Host/Origin


ROUTES = ["/events", "/metrics", "/healthz", "/readyz", "/sse", "/mcp"]


def test_foreign_host_or_origin_is_refused_on_every_route(tmp_path):
    """Regression (issue 8 C): /events and /metrics answered 200 to Host: evil.example and
    Origin: http://evil.example; only /mcp and /sse checked."""
    with serve_app(settings_for(tmp_path)) as (base, _):
        for route in ROUTES:
            for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"},
                            {"Host": "evil.example", "Origin": "http://evil.example"}, {"Origin": "null"}):
                got = httpx.get(f"{base}{route}", headers=headers, timeout=10)
                assert got.status_code == 403, (route, headers, got.status_code)
                assert "OPSMCP_ALLOWED" in got.json()["error_description"]
        # requests without Origin, and same-origin ones, pass
        port = base.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            ok = httpx.get(f"{base}/metrics", headers={"Host": host, "Origin": f"http://{host}"}, timeout=10)
            assert ok.status_code == 200, host
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert mcp_post(base, INIT).status_code == 200
        # another local port is another origin
        assert httpx.get(f"{base}/metrics", headers={"Origin": "http://127.0.0.1:1"}, timeout=10).status_code == 403


def test_configured_origins_and_hosts(tmp_path):
    settings = settings_for(tmp_path, allowed_origins="https://ui.example, http://localhost:*",
                            allowed_hosts="ops.example")
    with serve_app(settings) as (base, _):
        for origin in ("https://ui.example", "https://UI.example/", "http://localhost:5173"):
            assert httpx.get(f"{base}/metrics", headers={"Origin": origin}, timeout=10).status_code == 200, origin
        # the SDK's own loopback origin list no longer overrides ours on /mcp
        assert mcp_post(base, INIT, Origin="https://ui.example").status_code == 200
        for origin in ("http://ui.example", "https://ui.example.evil", "https://localhost:5173"):
            assert httpx.get(f"{base}/metrics", headers={"Origin": origin}, timeout=10).status_code == 403, origin
        assert httpx.get(f"{base}/metrics", headers={"Host": "ops.example"}, timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", headers={"Host": "ops.example.evil"}, timeout=10).status_code == 403


def test_non_loopback_bind_still_validates_origin(tmp_path):
    """Regression (issue 8 D): bound to a non-loopback address the SDK switches Host/Origin
    validation off, so a valid token plus a foreign Origin got 200."""
    auth = {"Authorization": f"Bearer {STRONG}"}
    with serve_app(settings_for(tmp_path, http_token=STRONG), bind="0.0.0.0") as (base, _):
        assert httpx.get(f"{base}/metrics", headers=auth, timeout=10).status_code == 200
        for route in ("/metrics", "/events", "/healthz"):
            got = httpx.get(f"{base}{route}", headers={**auth, "Origin": "http://evil.example"}, timeout=10)
            assert got.status_code == 403, route
        assert mcp_post(base, INIT, Origin="http://evil.example", **auth).status_code == 403
        assert mcp_post(base, INIT, **auth).status_code == 200
    # behind a load balancer: OPSMCP_ALLOWED_HOSTS restricts Host on a non-loopback bind too
    with serve_app(settings_for(tmp_path, http_token=STRONG, allowed_hosts="ops.example"),
               bind="0.0.0.0") as (base, _):
        assert httpx.get(f"{base}/metrics", headers={**auth, "Host": "ops.example"}, timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", headers={**auth, "Host": "evil.example"}, timeout=10).status_code == 403


# ----------------------------------------------------------------- G + F: shared token


async def test_shared_token_scheme_case_insensitive_and_subject_not_a_hash(tmp_path):
    """Regression (issue 8 G): `bearer secret` got 401. (F): the caller label was
    sha256(token)[:8]; now it is the configured subject."""
    import hashlib

    token = "t0ken-for-tests"
    settings = settings_for(tmp_path, http_token=token, http_token_subject="ops-team")
    with serve_app(settings) as (base, _):
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            got = httpx.get(f"{base}/metrics", headers={"Authorization": f"{scheme} {token}"}, timeout=10)
            assert got.status_code == 200, scheme
        for value in (None, "Bearer wrong", f"Basic {token}", f"Bearer{token}", "Bearer " + "x" * 10000):
            got = httpx.get(f"{base}/metrics", headers={"Authorization": value} if value else {}, timeout=10)
            assert got.status_code == 401, value
            assert got.headers["www-authenticate"].startswith("Bearer ")
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # probes need no token
        async with await mcp_session(base, token) as client:
            res = await client.call_tool("redrive_dlq", {"queue": "orders-dlq"})  # a dry run; backend is down
        assert res.is_error and "ops:write" not in res.content[0].text
    callers = {r["caller"] for r in audit_records(settings)}
    assert callers == {"ops-team"}
    assert hashlib.sha256(token.encode()).hexdigest()[:8] not in json.dumps(audit_records(settings))


# ----------------------------------------------------------------- tokens file and scopes


def add_token(tmp_path: Path, capsys: Any, subject: str, scopes: str) -> str:
    assert cli_main(["token", "add", subject, "--scopes", scopes, "--file", str(tmp_path / "tokens.jsonl")]) == 0
    return capsys.readouterr().out.strip()


def test_a_minted_token_never_reads_as_an_option_and_is_redacted(tmp_path):
    """``secrets.token_urlsafe`` starts one token in 64 with ``-``, which ``opsmcp approvals
    approve ID --token T`` read as an option (CI once failed on it): every token opsmcp mints
    starts with ``opsmcp_``, the CLI takes it after ``--token``, and the audit redacts one
    found in any value."""
    from opsmcp.calls.audit import REDACTED, redact
    from opsmcp.cli import build_parser
    from opsmcp.transport.auth import add_token as mint

    tokens = [mint(tmp_path / "tokens.jsonl", f"user{i}", ["ops:read"]) for i in range(300)]
    assert all(t.startswith("opsmcp_") and len(t) == 50 for t in tokens)
    assert len(set(tokens)) == 300
    parsed = build_parser().parse_args(["approvals", "approve", "apr-1", "--token", tokens[0]])
    assert parsed.token == tokens[0]
    dashed = build_parser().parse_args(["approvals", "approve", "apr-1", "--token=-starts-with-a-dash"])
    assert dashed.token == "-starts-with-a-dash"
    assert redact({"note": f"use {tokens[1]} here"}) == {"note": f"use {REDACTED} here"}


async def test_tokens_file_scopes_and_tool_visibility(tmp_path, capsys):
    reader = add_token(tmp_path, capsys, "alice", "ops:read")
    writer = add_token(tmp_path, capsys, "bob", "ops:read,ops:write")
    nobody = add_token(tmp_path, capsys, "writer-only", "ops:write")
    stored = (tmp_path / "tokens.jsonl").read_text()
    assert reader not in stored and writer not in stored  # only hashes
    assert [json.loads(line)["subject"] for line in stored.splitlines()] == ["alice", "bob", "writer-only"]
    assert (tmp_path / "tokens.jsonl").stat().st_mode & 0o777 == 0o600
    assert cli_main(["token", "add", "eve", "--scopes", "ops:admin", "--file", str(tmp_path / "tokens.jsonl")]) == 1

    settings = settings_for(tmp_path, tokens_file=tmp_path / "tokens.jsonl")
    with serve_app(settings) as (base, _):
        def status(route: str, token: str) -> int:
            return httpx.get(f"{base}{route}", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

        assert status("/metrics", "nope") == 401
        assert status("/metrics", reader) == 200
        assert status("/events", nobody) == 403

        async with await mcp_session(base, reader) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "list_queues" in names and "redrive_dlq" not in names
            for args in ({"queue": "orders-dlq"}, {"queue": "orders-dlq", "dry_run": False}):
                res = await client.call_tool("redrive_dlq", args)
                assert res.is_error and "needs scope ops:write" in res.content[0].text
                assert "alice" in res.content[0].text
        assert audit_records(settings) == []  # refused before any preview or intent record

        async with await mcp_session(base, writer) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"list_queues", "redrive_dlq"} <= names
            res = await client.call_tool("redrive_dlq", {"queue": "orders-dlq"})
            assert res.is_error and "needs scope" not in res.content[0].text  # reached the (dead) backend

        async with await mcp_session(base, nobody) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "redrive_dlq" in names and "list_queues" not in names
            res = await client.call_tool("list_queues", {})
            assert res.is_error and "needs scope ops:read" in res.content[0].text

        # a token added while the server runs works without a restart
        late = add_token(tmp_path, capsys, "carol", "ops:read")
        assert status("/metrics", late) == 200
    assert {r["caller"] for r in audit_records(settings)} == {"bob"}


async def test_write_scope_is_checked_in_the_choke_point_and_resolver_too(tmp_path):
    """Defence in depth under the protocol guard: the choke point and the approval resolver
    refuse on their own (in-memory client, scopes set for this task)."""
    from mcp import Client

    from opsmcp.calls.identity import READ_SCOPE, scopes
    from opsmcp.surface.tool_visibility import ProtocolGuard

    prompts: list[str] = []

    async def approve(context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        prompts.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    settings = settings_for(tmp_path)
    server, _ = build_server(settings)
    server.middleware[:] = [m for m in server.middleware if not isinstance(m, ProtocolGuard)]
    token = scopes.set(frozenset({READ_SCOPE}))
    try:
        for callback in (None, approve):  # without elicitation: the choke point; with it: the resolver first
            async with Client(server, elicitation_callback=callback) as client:
                for args in ({"queue": "q-dlq"}, {"queue": "q-dlq", "dry_run": False}):
                    res = await client.call_tool("redrive_dlq", args)
                    assert res.is_error and "needs scope ops:write" in res.content[0].text, res.content
    finally:
        scopes.reset(token)
    assert prompts == [] and audit_records(settings) == []  # no approval prompt, no preview


def test_malformed_tokens_file_refuses_to_start(tmp_path):
    from opsmcp.errors import OpsError

    (tmp_path / "tokens.jsonl").write_text('{"subject": "a"}\n')
    with pytest.raises(OpsError, match="line 1"), \
            serve_app(settings_for(tmp_path, tokens_file=tmp_path / "tokens.jsonl")):
        pass


# ----------------------------------------------------------------- OAuth: JWT + JWKS


async def test_oauth_resource_server_with_jwks(tmp_path):
    import jwt

    issuer = ISSUER
    with oauth(tmp_path, public_url="https://ops.example") as (settings, mint, other):
        with serve_app(settings) as (base, _):
            # 401 points at the RFC 9728 metadata, which is served without a token
            denied = httpx.get(f"{base}/metrics", timeout=10)
            assert denied.status_code == 401
            assert ('resource_metadata="https://ops.example/.well-known/oauth-protected-resource/mcp"'
                    in denied.headers["www-authenticate"])
            assert mcp_post(base, INIT).status_code == 401
            meta = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10)
            assert meta.status_code == 200
            assert meta.json()["resource"] == "https://ops.example/mcp"
            assert [s.rstrip("/") for s in meta.json()["authorization_servers"]] == [issuer]  # SDK adds a slash
            assert set(meta.json()["scopes_supported"]) == {"ops:read", "ops:write", "ops:approve", "alerts:write"}
            evil_meta = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp",
                                  headers={"Origin": "http://evil.example"}, timeout=10)
            assert evil_meta.status_code == 403

            bad = {
                "wrong audience": mint(aud="someone-else"),
                "wrong issuer": mint(iss="https://evil.example"),
                "expired": mint(exp=int(time.time()) - 60),
                "no exp": mint(exp=DROP),
                "unknown key": mint(signing_key=other, alg="ES256"),
                "HS256 with the public key id": jwt.encode({"iss": issuer, "aud": "opsmcp-tests", "sub": "x",
                                                            "exp": int(time.time()) + 60}, "k" * 32,
                                                           algorithm="HS256", headers={"kid": "k1"}),
                "not a jwt": "abc.def.ghi",
            }
            for why, tok in bad.items():
                got = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {tok}"}, timeout=10)
                assert got.status_code == 401, why

            assert httpx.get(f"{base}/metrics", headers={"Authorization": f"bearer {mint()}"},
                             timeout=10).status_code == 200
            no_read = mint(scope=DROP, scp=["ops:write"])
            assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {no_read}"},
                             timeout=10).status_code == 403

            async with await mcp_session(base, mint()) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "search_logs" in names and "redrive_dlq" not in names
                res = await client.call_tool("redrive_dlq", {"queue": "orders-dlq"})
                assert res.is_error and "user-42" in res.content[0].text and "ops:write" in res.content[0].text
            async with await mcp_session(base, mint(scope=DROP, scp=["ops:read", "ops:write"])) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "redrive_dlq" in names
                res = await client.call_tool("redrive_dlq", {"queue": "orders-dlq"})
                assert res.is_error and "needs scope" not in res.content[0].text
        assert {r["caller"] for r in audit_records(settings)} == {"user-42"}


def test_jwks_without_issuer_is_a_configuration_error(tmp_path):
    from opsmcp.errors import OpsError

    with pytest.raises(OpsError, match="OPSMCP_JWT_ISSUER"), serve_app(settings_for(tmp_path, jwks_url="http://x/jwks")):
        pass


# ----------------------------------------------------------------- liveness / readiness


def test_readyz_waits_for_the_sandbox_and_reports_its_failure(tmp_path):
    """Regression (issue 8 point 4): /healthz said ok before the sandbox was ready and hid a
    start-up error."""
    def starting(runtime: Runtime) -> None:
        runtime.ready.clear()  # what `opsmcp serve` does while the sandbox boots
        runtime.backend_check = None  # no backend here; /readyz's backend probe: test_first_hour.py

    with serve_app(settings_for(tmp_path), prepare=starting) as (base, runtime):
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and "starting" in ready.json()["reason"]
        runtime.startup_error = "the embedded sandbox failed to start: OSError: port in use"
        runtime.ready.set()
        failed = httpx.get(f"{base}/readyz", timeout=10)
        assert failed.status_code == 503 and "port in use" in failed.json()["reason"]
        assert httpx.get(f"{base}/healthz", timeout=10).json()["ready"] is False
        runtime.startup_error = None
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200


# ----------------------------------------------------------------- /metrics (prometheus-client)


async def test_metrics_count_outcomes_latency_and_backend_errors_per_server(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    from opsmcp.backends.logstore import LogStore

    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"timestamp": "2026-11-21T10:00:00Z", "level": "ERROR", "service": "api", '
                     '"message": "boom", "trace_id": "t1"}\n')
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True)
        LogStore(tmp_path / name / "data" / "logs.db").load_files([str(lines)], show_progress=False)
    with serve_app(settings_for(tmp_path / "a")) as (base, _), serve_app(settings_for(tmp_path / "b")) as (other, _):
        async with await mcp_session(base, None) as client:
            assert not (await client.call_tool("log_stats", {})).is_error
            assert (await client.call_tool("list_queues", {})).is_error  # backend down
            assert (await client.call_tool("get_trace", {"trace_id": "nope"})).is_error
        got = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert got[("opsmcp_tool_calls_total", (("outcome", "ok"), ("tool", "log_stats")))] == 1
        assert got[("opsmcp_tool_calls_total", (("outcome", "tool_error"), ("tool", "list_queues")))] == 1
        assert got[("opsmcp_backend_errors_total", (("error", "BackendUnavailable"), ("tool", "list_queues")))] == 1
        assert got[("opsmcp_backend_errors_total", (("error", "NotFound"), ("tool", "get_trace")))] == 1
        assert got[("opsmcp_tool_duration_seconds_count", (("tool", "log_stats"),))] == 1
        assert ("opsmcp_tool_duration_seconds_bucket", (("le", "+Inf"), ("tool", "list_queues"))) in got
        # the second server in this process has its own registry
        assert not any(name == "opsmcp_tool_calls_total" for name, _ in samples(httpx.get(f"{other}/metrics").text))


# ----------------------------------------------------------------- prompts


async def test_unknown_prompt_is_invalid_params(tmp_path):
    """Regression (issue 12): the SDK answered -32603 Internal error for an unknown prompt name."""
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    server, _ = build_server(settings_for(tmp_path))
    async with Client(server) as client:
        with pytest.raises(MCPError) as err:
            await client.get_prompt("no-such-prompt")
    assert err.value.code == -32602 and "no-such-prompt" in err.value.message


# ----------------------------------------------------------------- issue 19: claim shapes, weak tokens


def test_jwt_scope_claim_of_any_shape_is_401_or_403_never_500(tmp_path):
    """Regression (issue 19 item 9): a JWT whose `scope` was null or a number got HTTP 500
    with a traceback from jwt_scopes. Now: null, "" or a missing claim mean no scopes (403
    where a scope is needed); any other shape makes the token invalid (401)."""
    with oauth(tmp_path) as (settings, mint, _), serve_app(settings) as (base, _):
        shapes = {
            "null": (mint(scope=None), 403), "empty": (mint(scope=""), 403), "missing": (mint(scope=DROP), 403),
            "number": (mint(scope=5), 401), "float": (mint(scope=1.5), 401), "object": (mint(scope={"a": 1}), 401),
            "list of numbers": (mint(scope=DROP, scp=[1, 2]), 401), "bool": (mint(scope=True), 401),
            "scp null": (mint(scope=DROP, scp=None), 403), "mixed list": (mint(scope=["ops:read", 2]), 401),
            "list of strings": (mint(scope=["ops:read"]), 200), "exp as float": (mint(exp=time.time() + 300.5), 200),
            "sub a number": (mint(sub=42), 401), "client_id an object": (mint(client_id={"a": [1]}), 200),
        }
        for why, (token, expected) in shapes.items():
            got = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert got.status_code == expected, (why, got.status_code, got.text[:200])
            posted = mcp_post(base, INIT, Authorization=f"Bearer {token}")
            assert posted.status_code in ((401,) if expected == 401 else (200,)), (why, posted.status_code)


def test_weak_shared_token_refused_on_a_non_loopback_bind(tmp_path, monkeypatch, capsys):
    """Regression (issue 19 item 13): `OPSMCP_HTTP_TOKEN=a opsmcp serve --host 0.0.0.0`
    served. Tokens under 32 characters are refused on a non-loopback bind (the command that
    makes a good one is in the message); loopback binds and long tokens still serve."""
    from opsmcp.errors import OpsError

    monkeypatch.setenv("OPSMCP_HTTP_TOKEN", "a")
    monkeypatch.setenv("OPSMCP_AWS_ENDPOINT_URL", DEAD_ENDPOINT)
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(tmp_path / "data"))
    for host in ("0.0.0.0", "::", "192.0.2.10", "ops.example"):
        assert cli_main(["serve", "--transport", "http", "--host", host, "--port", str(free_port())]) == 2
        err = capsys.readouterr().err
        assert "OPSMCP_HTTP_TOKEN is 1 characters" in err and "at least 32" in err, err
        assert "secrets.token_urlsafe(32)" in err
    for weak in ({"http_token": "x" * 31}, {"webhook_token": "w" * 12, "http_token": STRONG}):
        with pytest.raises(OpsError, match="at least 32"), serve_app(settings_for(tmp_path, **weak), bind="0.0.0.0"):
            pass
    with serve_app(settings_for(tmp_path, http_token="a"), bind="127.0.0.1") as (base, _):  # loopback: any token
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer a"}, timeout=10).status_code == 200
    with serve_app(settings_for(tmp_path, http_token="x" * 32), bind="0.0.0.0") as (base, _):
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {'x' * 32}"},
                         timeout=10).status_code == 200


def test_requests_with_unusable_ids_get_a_jsonrpc_error(tmp_path):
    """Regression (issue 19 item 16): requests whose id is 1e999, NaN, [1] or {"a":1} got
    202 and no answer (the SDK took them for notifications). Now: 400 with JSON-RPC -32600
    Invalid Request and id null, on /mcp and the legacy /messages/; good ids still work."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
    with serve_app(settings_for(tmp_path)) as (base, _):
        opened = mcp_post(base, INIT)
        assert opened.status_code == 200
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        for raw_id in ("1e999", "-1e999", "NaN", "Infinity", "[1]", '{"a":1}', "null", "true", "1.5", "1.0"):
            body = f'{{"jsonrpc":"2.0","id":{raw_id},"method":"tools/list","params":{{}}}}'
            got = httpx.post(f"{base}/mcp", content=body, headers=headers, timeout=10)
            assert got.status_code == 400, (raw_id, got.status_code, got.text)
            answer = got.json()
            assert answer["id"] is None and answer["error"]["code"] == -32600, (raw_id, answer)
            assert "string or an integer" in answer["error"]["message"]
        for good in ("7", '"abc"', "123456789012345678901234567890"):
            body = f'{{"jsonrpc":"2.0","id":{good},"method":"tools/list","params":{{}}}}'
            got = httpx.post(f"{base}/mcp", content=body, headers=headers, timeout=10)
            assert got.status_code == 200 and "list_queues" in got.text, (good, got.text[:200])
        # a notification (no id) is still accepted; a body that is not JSON gets the SDK's parse error
        note = httpx.post(f"{base}/mcp", content='{"jsonrpc":"2.0","method":"notifications/initialized"}',
                          headers=headers, timeout=10)
        assert note.status_code == 202
        assert httpx.post(f"{base}/mcp", content=b'{"id": 1', headers=headers, timeout=10).status_code == 400
        # legacy SSE: the message endpoint answers the same way
        got = httpx.post(f"{base}/messages/?session_id={'0' * 32}", headers={"Content-Type": "application/json"},
                         content='{"jsonrpc":"2.0","id":NaN,"method":"ping"}', timeout=10)
        assert got.status_code == 400 and got.json()["error"]["code"] == -32600
