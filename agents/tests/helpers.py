"""Test helpers: a scripted chat model, server discovery, result digging, free ports.

Nothing here fakes opsmcp: the tests drive the real server over stdio. The scripted
model only replaces the LLM, with a deterministic sequence of tool calls.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

AGENTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = AGENTS_DIR.parent

Step = AIMessage | Callable[[list[BaseMessage]], Any]


class ScriptedChatModel(BaseChatModel):
    """A chat model that replays a fixed script, one entry per model call.

    Each entry is an ``AIMessage`` or a callable taking the messages the model was given
    and returning one (sync or async, so a step can read earlier tool results). Records
    every call's messages and the names of the tools bound to it.
    """

    script: list[Any] = Field(default_factory=list)
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[str] = Field(default_factory=list)
    tool_choices: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        self.bound_tools[:] = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        self.tool_choices.append(tool_choice)
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        raise NotImplementedError("the scripted model is async only")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(list(messages))
        index = len(self.calls) - 1
        assert index < len(self.script), (
            f"the model was called {index + 1} times; the script has {len(self.script)} steps"
        )
        step = self.script[index]
        msg = step(messages) if callable(step) else step
        if inspect.isawaitable(msg):
            msg = await msg
        return ChatResult(generations=[ChatGeneration(message=msg)])


def call(name: str, args: dict[str, Any], call_id: str | None = None) -> AIMessage:
    """An AIMessage that calls one tool."""
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id or f"call_{name}", "type": "tool_call"}]
    )


def last_tool_message(messages: list[BaseMessage]) -> ToolMessage:
    """The most recent ToolMessage in ``messages``."""
    for m in reversed(messages):
        if isinstance(m, ToolMessage):
            return m
    raise AssertionError("no tool result in the conversation")


def tool_payload(msg: ToolMessage) -> Any:
    """The structured result of a ToolMessage (artifact, else JSON text, else text)."""
    art = msg.artifact
    if isinstance(art, dict) and art.get("structured_content") is not None:
        return art["structured_content"]
    text = (
        msg.content
        if isinstance(msg.content, str)
        else "\n".join(b.get("text", "") for b in msg.content if isinstance(b, dict))
    )
    try:
        return json.loads(text)
    except ValueError:
        return text


def walk(obj: Any) -> Iterator[tuple[str | None, Any]]:
    """Yield ``(key, value)`` for every value nested in dicts and lists (key None in lists)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield None, v
            yield from walk(v)


def trace_ids(obj: Any) -> list[str]:
    """Every string under a key whose name mentions 'trace' (singular or list), in order."""
    found: list[str] = []
    for key, value in walk(obj):
        if key and "trace" in key.lower():
            values = value if isinstance(value, list) else [value]
            found += [v for v in values if isinstance(v, str) and v]
    if not found and isinstance(obj, str):
        found = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", obj)
    return list(dict.fromkeys(found))


def dlq_names(obj: Any) -> list[str]:
    """Every string in ``obj`` that looks like a DLQ name (contains 'dlq'), in order."""
    names = [v for _, v in walk(obj) if isinstance(v, str) and "dlq" in v.lower() and len(v) < 90 and " " not in v]
    return list(dict.fromkeys(n.rsplit("/", 1)[-1] for n in names))


def server_command() -> str | None:
    """The opsmcp server command for tests, with ``--sandbox``; ``None`` if not installed.

    ``OPSMCP_AGENT_SERVER_COMMAND`` wins; else the main venv's ``.venv/bin/opsmcp``; else
    ``opsmcp`` on PATH.
    """
    env = os.environ.get("OPSMCP_AGENT_SERVER_COMMAND")
    if env:
        return env
    local = REPO_ROOT / ".venv" / "bin" / "opsmcp"
    exe = str(local) if local.exists() else shutil.which("opsmcp")
    if not exe:
        return None
    return f"{shlex.quote(exe)} serve --sandbox"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until it returns true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
