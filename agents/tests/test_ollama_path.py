"""The Ollama path end to end: the real ``opsmcp-agent`` console script, ``ChatOllama``
and the real opsmcp server, with a small HTTP server that speaks Ollama's API
(``/api/tags``, ``/api/show``, streaming ``/api/chat``) and replies from a script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
from helpers import free_port

AGENT = str(Path(sys.executable).with_name("opsmcp-agent"))

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


class FakeOllama:
    """Speaks enough of Ollama's HTTP API for ChatOllama; records every /api/chat body.

    Args:
        replies: one per /api/chat request: ``{"content": str, "tool_calls": [(name, args)]}``
            or ``{"status": 400, "error": "..."}``.
        capabilities: what /api/show reports (``None``: the field is left out, like old Ollama).
        models: model names /api/tags lists.
    """

    def __init__(
        self, replies: list[Reply], capabilities: list[str] | None = None, models: tuple[str, ...] = ("qwen3:8b",)
    ) -> None:
        self.replies = list(replies)
        self.capabilities = capabilities
        self.models = models
        self.chats: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/tags":
                    self._json(200, {"models": [{"name": m, "model": m} for m in fake.models]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                if self.path == "/api/show":
                    info: dict[str, Any] = {"modelfile": "", "details": {"family": "qwen3"}}
                    if fake.capabilities is not None:
                        info["capabilities"] = fake.capabilities
                    self._json(200, info)
                    return
                if self.path != "/api/chat":
                    self._json(404, {"error": "not found"})
                    return
                fake.chats.append(body)
                if len(fake.chats) > len(fake.replies):
                    self._json(500, {"error": f"script exhausted after {len(fake.replies)} replies"})
                    return
                reply = fake.replies[len(fake.chats) - 1]
                reply = reply(body) if callable(reply) else reply
                if "error" in reply:
                    self._json(reply.get("status", 400), {"error": reply["error"]})
                    return
                self._stream(body, reply)

            def _stream(self, body: dict[str, Any], reply: dict[str, Any]) -> None:
                message: dict[str, Any] = {"role": "assistant", "content": reply.get("content", "")}
                if reply.get("tool_calls"):
                    message["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in reply["tool_calls"]]
                base = {"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z"}
                lines = [
                    {**base, "message": message, "done": False},
                    {
                        **base,
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": "stop",
                        "total_duration": 1000,
                        "prompt_eval_count": 10,
                        "eval_count": 5,
                    },
                ]
                if not body.get("stream", True):
                    self._json(200, {**lines[1], "message": message})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for line in lines:
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def agent_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    yield env


def run_agent(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )


def _tool_messages(chat: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in chat["messages"] if m.get("role") == "tool"]


def test_chatollama_drives_real_opsmcp(server_cmd: str, sandbox: dict, agent_env: dict[str, str]) -> None:
    replies: list[Reply] = [
        {"content": "", "tool_calls": [("list_queues", {})]},
        {"content": "", "tool_calls": [("get_order", {"order_id": "ORD-NOPE-0001"})]},
        {"content": f"The DLQ {sandbox['dlq']} has failed orders [1]; ORD-NOPE-0001 does not exist [2]."},
    ]
    with FakeOllama(replies, capabilities=["completion", "tools"]) as ollama:
        proc = run_agent(
            ["ask", "why are orders failing?", "--base-url", ollama.url, "--json", "--server-command", server_cmd],
            agent_env,
        )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [s["tool"] for s in doc["steps"]] == ["list_queues", "get_order"]
    assert doc["steps"][0]["ok"] is True and doc["steps"][1]["ok"] is False
    assert doc["answer"] == replies[2]["content"]
    assert doc["cited_steps"] == [1, 2]
    assert len(ollama.chats) == 3
    first = ollama.chats[0]
    # ChatOllama sent the model, our options, the system prompt and opsmcp's tool schemas
    assert first["model"] == "qwen3:8b" and first["think"] is False
    assert first["options"]["num_ctx"] == 16384 and first["options"]["temperature"] == 0
    assert first["messages"][0]["role"] == "system" and "triage path" in first["messages"][0]["content"].lower()
    names = {t["function"]["name"] for t in first["tools"]}
    assert {"list_queues", "analyze_dlq", "get_trace", "get_order"} <= names
    schema = next(t["function"]["parameters"] for t in first["tools"] if t["function"]["name"] == "analyze_dlq")
    assert "queue" in schema["properties"]
    # the tool results went back to the model: the queue list, then the tool error text
    assert sandbox["dlq"] in _tool_messages(ollama.chats[1])[-1]["content"]
    assert "ORD-NOPE-0001" in _tool_messages(ollama.chats[2])[-1]["content"]
    # the live steps went to stderr
    assert "→ [1] list_queues()" in proc.stderr and "✗ ERROR:" in proc.stderr


def test_unreachable_endpoint_names_the_url_and_how_to_start_ollama(agent_env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_agent(
        ["ask", "why?", "--base-url", url, "--server-command", "/nonexistent/opsmcp serve"], agent_env, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert url in proc.stderr and "ollama serve" in proc.stderr and "ollama pull qwen3:8b" in proc.stderr


def test_missing_model_says_to_pull_it(agent_env: dict[str, str]) -> None:
    with FakeOllama([], models=("llama3.1:8b",)) as ollama:
        proc = run_agent(["ask", "why?", "--base-url", ollama.url], agent_env, timeout=60)
    assert proc.returncode == 3
    assert "ollama pull qwen3:8b" in proc.stderr and "llama3.1:8b" in proc.stderr


def test_model_without_tool_calling_is_reported_before_starting(agent_env: dict[str, str]) -> None:
    with FakeOllama([], capabilities=["completion"]) as ollama:
        proc = run_agent(["ask", "why?", "--base-url", ollama.url, "--json"], agent_env, timeout=60)
    assert proc.returncode == 4
    assert "does not support tool calling" in proc.stderr
    assert json.loads(proc.stdout)["kind"] == "ToolCallingUnsupported"
    assert ollama.chats == []


def test_tool_refusal_at_chat_time_is_reported(server_cmd: str, sandbox: dict, agent_env: dict[str, str]) -> None:
    refusal = {"status": 400, "error": "registry.ollama.ai/library/qwen3:8b does not support tools"}
    with FakeOllama([refusal], capabilities=None) as ollama:
        proc = run_agent(["ask", "why?", "--base-url", ollama.url, "--server-command", server_cmd], agent_env)
    assert proc.returncode == 4, proc.stderr
    assert "does not support tool calling" in proc.stderr and ollama.url in proc.stderr
