"""The agent's settings: which model, which opsmcp, which limits.

One frozen dataclass, :class:`AgentConfig`, filled from CLI flags with environment
fallbacks (:func:`AgentConfig.from_env` gives the defaults). Nothing here does I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

ALL_TOOLSETS = ("queues", "orders", "logs", "metrics", "playbooks")

DEFAULT_MODEL = "qwen3:8b"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "http://127.0.0.1:8000/v1"
DEFAULT_SERVER_COMMAND = "opsmcp serve"


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent run needs.

    Attributes:
        provider: ``"ollama"`` (native ``/api/chat``) or ``"openai"`` (any
            OpenAI-compatible ``/v1/chat/completions``: vLLM, llama.cpp server, ...).
        model: model name as the endpoint knows it, e.g. ``"qwen3:8b"``.
        base_url: endpoint root; ``None`` means the provider default
            (``OLLAMA_HOST`` or ``http://127.0.0.1:11434``; ``http://127.0.0.1:8000/v1``).
        api_key: bearer key for OpenAI-compatible endpoints (most local ones ignore it).
        temperature: sampling temperature, 0 for repeatable investigations.
        think: let reasoning models (qwen3) think before answering; slower.
        num_ctx: Ollama context window in tokens (Ollama's own default, 2–4k, silently
            truncates tool definitions and results).
        server_command: command line that starts opsmcp over stdio (shell-split).
        server_url: streamable-HTTP endpoint (``http://host:port/mcp``); when set it is
            used instead of ``server_command``.
        token: bearer token sent to ``server_url``.
        toolsets: toolsets to expose to the model (subset of :data:`ALL_TOOLSETS`);
            ``None`` means all the server offers.
        allow_writes: start the stdio server with ``--allow-writes`` (write tools still
            ask for confirmation through elicitation).
        assume_yes: answer "yes" to every confirmation the server asks for. Never the
            default.
        max_steps: most tool calls one run may make before it stops with a partial answer.
        time_limit: wall-clock limit of one run, in seconds.
        first_tool: force the first model turn of each question to call this tool (a
            tool name), or any tool (``"any"``); for small models that would otherwise
            answer blind. The model still chooses the arguments. ``None``: the model decides.
        max_tokens: most tokens per model reply (OpenAI-compatible endpoints); ``None``
            leaves it to the endpoint.
        max_tool_chars: most characters of one tool result handed to the model; the rest
            is cut with a note (the full result still shows in the evidence and ``--json``).
    """

    provider: str = "ollama"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = None
    temperature: float = 0.0
    think: bool = False
    num_ctx: int = 16384
    server_command: str = DEFAULT_SERVER_COMMAND
    server_url: str | None = None
    token: str | None = None
    toolsets: tuple[str, ...] | None = None
    allow_writes: bool = False
    assume_yes: bool = False
    max_steps: int = 12
    time_limit: float = 300.0
    first_tool: str | None = None
    max_tokens: int | None = None
    max_tool_chars: int = 12_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AgentConfig:
        """Build the defaults, overridden by ``OPSMCP_AGENT_*`` environment variables.

        Args:
            env: the environment to read (default ``os.environ``). Recognised names:
                ``OPSMCP_AGENT_PROVIDER``, ``OPSMCP_AGENT_MODEL``, ``OPSMCP_AGENT_BASE_URL``,
                ``OPSMCP_AGENT_API_KEY`` (else ``OPENAI_API_KEY``),
                ``OPSMCP_AGENT_SERVER_COMMAND``, ``OPSMCP_AGENT_SERVER_URL``,
                ``OPSMCP_AGENT_TOKEN`` (else ``OPSMCP_HTTP_TOKEN``).
        """
        env = dict(os.environ if env is None else env)
        return cls(
            provider=env.get("OPSMCP_AGENT_PROVIDER", "ollama"),
            model=env.get("OPSMCP_AGENT_MODEL", DEFAULT_MODEL),
            base_url=env.get("OPSMCP_AGENT_BASE_URL") or None,
            api_key=env.get("OPSMCP_AGENT_API_KEY") or env.get("OPENAI_API_KEY") or None,
            server_command=env.get("OPSMCP_AGENT_SERVER_COMMAND", DEFAULT_SERVER_COMMAND),
            server_url=env.get("OPSMCP_AGENT_SERVER_URL") or None,
            token=env.get("OPSMCP_AGENT_TOKEN") or env.get("OPSMCP_HTTP_TOKEN") or None,
        )

    def with_(self, **changes: object) -> AgentConfig:
        """Return a copy with ``changes`` applied; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def resolved_base_url(self) -> str:
        """The model endpoint URL actually used (the provider default when unset)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.provider == "ollama":
            host = os.environ.get("OLLAMA_HOST", "").strip()
            if host:
                return (host if "://" in host else f"http://{host}").rstrip("/")
            return DEFAULT_OLLAMA_URL
        return DEFAULT_OPENAI_URL


def parse_toolsets(value: str | None) -> tuple[str, ...] | None:
    """Parse ``"queues,logs"`` into ``("queues", "logs")``.

    Args:
        value: comma-separated toolset names, or ``None``/empty for "all".

    Returns:
        The names in the given order without duplicates, or ``None`` for all.

    Raises:
        ValueError: a name is not one of :data:`ALL_TOOLSETS`.
    """
    if not value:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in ALL_TOOLSETS]
    if unknown:
        raise ValueError(f"unknown toolset(s) {', '.join(unknown)}; choose from {', '.join(ALL_TOOLSETS)}")
    return names or None
