"""Model factory: a LangChain chat model for Ollama or any OpenAI-compatible endpoint.

:func:`build_chat_model` makes the model, :func:`check_model_endpoint` fails fast (before
the MCP server is even started) with a message that names the URL and how to start the
model server, and :func:`explain_model_error` turns the errors a run can hit mid-way into
the same operator-facing errors.
"""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.language_models.chat_models import BaseChatModel

from .config import AgentConfig
from .errors import ModelEndpointError, ToolCallingUnsupported

_OLLAMA_HELP = (
    "Start Ollama with `ollama serve` and fetch the model with `ollama pull {model}`, "
    "or point --base-url (or OLLAMA_HOST) at a running Ollama; for vLLM or a llama.cpp "
    "server use --provider openai --base-url http://HOST:PORT/v1."
)
_OPENAI_HELP = (
    "Start an OpenAI-compatible server there, e.g. `vllm serve MODEL --enable-auto-tool-choice "
    "--tool-call-parser hermes` or `python -m llama_cpp.server --model FILE.gguf "
    "--chat_format chatml-function-calling`, or pass the right --base-url."
)


def build_chat_model(config: AgentConfig) -> BaseChatModel:
    """Create the chat model named by ``config``.

    Args:
        config: ``provider`` selects ``ChatOllama`` (``"ollama"``) or ``ChatOpenAI``
            (``"openai"``); ``model``, ``resolved_base_url``, ``api_key``,
            ``temperature``, ``think`` and ``num_ctx`` (Ollama) or ``max_tokens``
            (OpenAI-compatible) are passed through.

    Returns:
        An unbound chat model; the agent binds the MCP tools to it.

    Raises:
        ValueError: an unknown provider.
    """
    url = config.resolved_base_url
    if config.provider == "ollama":
        from langchain_ollama import ChatOllama

        return ChatOllama(
            model=config.model,
            base_url=url,
            temperature=config.temperature,
            reasoning=config.think,
            num_ctx=config.num_ctx,
        )
    if config.provider == "openai":
        return _local_openai_class()(
            model=config.model,
            base_url=url,
            api_key=config.api_key or "not-needed",
            temperature=config.temperature,
            max_retries=1,
            timeout=config.time_limit,
            max_tokens=config.max_tokens,
        )
    raise ValueError(f"unknown provider {config.provider!r}; use 'ollama' or 'openai'")


def _local_openai_class() -> type[BaseChatModel]:
    """``ChatOpenAI`` adjusted for local OpenAI-compatible servers.

    Three differences in the request body: an assistant turn that only calls tools gets
    ``content: ""`` instead of ``null`` (llama-cpp-python's server rejects ``null``), the
    reply limit is sent as ``max_tokens`` (which vLLM and llama.cpp read) rather than the
    newer ``max_completion_tokens``, and tool schemas lose their string length bounds
    (see :func:`_without_length_bounds`).
    """
    from langchain_openai import ChatOpenAI

    class LocalChatOpenAI(ChatOpenAI):
        """ChatOpenAI whose request bodies suit vLLM and llama.cpp servers (see above)."""

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            for message in payload.get("messages", []):
                if message.get("role") == "assistant" and message.get("content") is None:
                    message["content"] = ""
            if "max_completion_tokens" in payload:
                payload["max_tokens"] = payload.pop("max_completion_tokens")
            for spec in payload.get("tools", []):
                function = spec.get("function") or {}
                if "parameters" in function:
                    function["parameters"] = _without_length_bounds(function["parameters"])
            return payload

    return LocalChatOpenAI


def _without_length_bounds(schema: Any) -> Any:
    """``schema`` without ``maxLength``/``minLength``: llama.cpp turns them into grammar
    repetitions, and a long bound (opsmcp's 2,048-character cursors) exceeds its grammar
    limits and stops the server. The server still enforces the bounds on every call."""
    if isinstance(schema, dict):
        return {k: _without_length_bounds(v) for k, v in schema.items() if k not in ("maxLength", "minLength")}
    if isinstance(schema, list):
        return [_without_length_bounds(v) for v in schema]
    return schema


def check_model_endpoint(config: AgentConfig, *, timeout: float = 5.0) -> None:
    """Check that the model endpoint answers and can call tools, before a run starts.

    For Ollama: ``GET /api/tags`` must answer and list the model, and ``POST /api/show``
    must not report a ``capabilities`` list without ``"tools"``. For OpenAI-compatible
    endpoints: ``GET /models`` must answer (any HTTP status means "reachable"; many local
    servers serve any model name, so the name is not checked).

    Args:
        config: the run's settings.
        timeout: seconds to wait for each HTTP request.

    Raises:
        ModelEndpointError: the endpoint is unreachable, or Ollama lacks the model.
        ToolCallingUnsupported: Ollama reports the model has no tool-calling capability.
    """
    url = config.resolved_base_url
    if config.provider == "ollama":
        _check_ollama(url, config.model, timeout)
    else:
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        try:
            httpx.get(f"{url}/models", headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ModelEndpointError(
                f"Cannot reach the OpenAI-compatible model endpoint at {url} ({_why(exc)}). {_OPENAI_HELP}"
            ) from exc


def _check_ollama(url: str, model: str, timeout: float) -> None:
    help_text = _OLLAMA_HELP.format(model=model)
    try:
        tags = httpx.get(f"{url}/api/tags", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelEndpointError(f"Cannot reach Ollama at {url} ({_why(exc)}). {help_text}") from exc
    if tags.status_code != 200:
        raise ModelEndpointError(
            f"{url} answered GET /api/tags with HTTP {tags.status_code}; is it an Ollama server? {help_text}"
        )
    names = _ollama_model_names(tags)
    wanted = {model, f"{model}:latest"} if ":" not in model else {model}
    if names is not None and not wanted & names:
        have = ", ".join(sorted(names)) or "none"
        raise ModelEndpointError(
            f"Ollama at {url} does not have the model {model!r} (it has: {have}). Run `ollama pull {model}`."
        )
    try:
        show = httpx.post(f"{url}/api/show", json={"model": model}, timeout=timeout)
    except httpx.HTTPError:
        return  # the chat call will report it
    if show.status_code == 200:
        caps = _json(show).get("capabilities")
        if isinstance(caps, list) and "tools" not in caps:
            raise ToolCallingUnsupported(
                f"The model {model!r} on {url} does not support tool calling (its capabilities: "
                f"{', '.join(map(str, caps)) or 'none'}). Use a tool-calling model such as qwen3:8b "
                "or llama3.1:8b (`ollama pull qwen3:8b`, then --model qwen3:8b)."
            )


def explain_model_error(exc: BaseException, config: AgentConfig) -> Exception | None:
    """Map an exception raised by a model call to an operator-facing error.

    Args:
        exc: what the chat model raised (httpx, ollama, openai errors; possibly wrapped).
        config: the run's settings, for the URL and model name in the message.

    Returns:
        A :class:`ToolCallingUnsupported` when the model or server refuses tools, a
        :class:`ModelEndpointError` for connection failures, unknown models and any
        other error raised by the openai/ollama/httpx clients, or ``None`` when ``exc``
        did not come from the model client (the caller re-raises it).
    """
    url = config.resolved_base_url
    text = str(exc)
    low = text.lower()
    name = type(exc).__name__
    if "does not support tools" in low or "tool calling" in low and "support" in low:
        return ToolCallingUnsupported(
            f"The model {config.model!r} at {url} does not support tool calling: {text}. "
            "Pick a tool-calling model (e.g. qwen3:8b)."
        )
    if "tool choice requires" in low or "enable-auto-tool-choice" in low or "tool_choice" in low and "not" in low:
        return ToolCallingUnsupported(
            f"The endpoint {url} refused tool calling for {config.model!r}: {text}. For vLLM start it with "
            "--enable-auto-tool-choice --tool-call-parser hermes; for llama.cpp use a tool-capable chat format."
        )
    connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)) or name in {
        "APIConnectionError",
        "APITimeoutError",
    }
    if connect or "failed to connect to ollama" in low:
        help_text = _OLLAMA_HELP.format(model=config.model) if config.provider == "ollama" else _OPENAI_HELP
        return ModelEndpointError(f"Lost the model endpoint at {url} ({text}). {help_text}")
    if config.provider == "ollama" and name == "ResponseError" and "not found" in low:
        return ModelEndpointError(f"Ollama at {url}: {text}. Run `ollama pull {config.model}`.")
    if name == "NotFoundError" and "model" in low:
        return ModelEndpointError(f"The endpoint {url} does not serve the model {config.model!r}: {text}")
    module = type(exc).__module__ or ""
    if module.split(".")[0] in {"openai", "ollama", "httpx"}:
        return ModelEndpointError(f"The model endpoint at {url} failed: {name}: {text[:1000]}")
    return None


def _ollama_model_names(resp: httpx.Response) -> set[str] | None:
    models = _json(resp).get("models")
    if not isinstance(models, list):
        return None
    names: set[str] = set()
    for m in models:
        if isinstance(m, dict):
            names.update(str(m[k]) for k in ("name", "model") if m.get(k))
    return names


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
