"""Turning tool calls and results into short human lines, and answers into text.

Pure functions: no I/O, no model, no MCP. Used by the live step printer, the evidence
list and the report.
"""

from __future__ import annotations

import json
import re
from typing import Any

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def format_args(args: dict[str, Any], limit: int = 160) -> str:
    """Render tool arguments as ``key=value`` pairs (values JSON-encoded).

    Args:
        args: the arguments the model chose.
        limit: maximum length of the result in characters; longer is cut with ``…``.
    """
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items())
    return _cut(text, limit)


def result_text(content: Any) -> str:
    """Flatten a ToolMessage ``content`` (a string or a list of content blocks) to text.

    Args:
        content: ``str`` or a list of ``{"type": "text", "text": ...}`` blocks (other
            block types are shown as ``[<type>]``).
    """
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            parts.append(block.get("text") if block.get("type") == "text" else f"[{block.get('type')}]")
    return "\n".join(p for p in parts if p)


def structured_of(text: str, artifact: Any) -> Any:
    """Return the structured result of a tool call, if there is one.

    Args:
        text: the flattened text content.
        artifact: the ToolMessage artifact (``{"structured_content": {...}}`` from
            langchain-mcp-adapters) or ``None``.

    Returns:
        The ``structuredContent`` dict when present, else the text parsed as JSON when
        it is a JSON object or array, else ``None``.
    """
    if isinstance(artifact, dict) and artifact.get("structured_content") is not None:
        return artifact["structured_content"]
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            return json.loads(stripped)
        except ValueError:
            return None
    return None


def one_line(text: str, structured: Any = None, *, is_error: bool = False, limit: int = 160) -> str:
    """Summarise one tool result in a single line.

    Args:
        text: the result's text content.
        structured: its structured content (dict or list), if any; preferred over text.
        is_error: the tool reported an error (``isError``); the line starts ``ERROR:``.
        limit: maximum characters.

    Returns:
        e.g. ``"queue=order-queue-dlq, total=42, groups=[3], truncated=true"`` or the
        first line of text, cut to ``limit``.
    """
    if is_error:
        return _cut("ERROR: " + " ".join(text.split()), limit)
    if isinstance(structured, dict):
        scalars, lists = [], []
        for key, value in structured.items():
            if key in _QUIET_KEYS and not value:
                continue
            if key == "notes":
                continue
            if isinstance(value, list):
                lists.append(f"{key}={_preview(value)}")
            elif isinstance(value, dict):
                lists.append(f"{key}={{{len(value)} keys}}")
            else:
                scalars.append(f"{key}={_cut(json.dumps(value, ensure_ascii=False, default=str), 48)}")
        if scalars or lists:
            return _cut(", ".join(scalars + lists), limit)
    if isinstance(structured, list):
        return _cut(_preview(structured), limit)
    return _cut(" ".join(text.split()) or "(empty result)", limit)


def clean_answer(text: str) -> str:
    """Remove ``<think>…</think>`` blocks (reasoning models) and surrounding blank space."""
    return _THINK.sub("", text or "").strip()


_MARKUP = re.compile(
    r"</?\|?(?:tool_call|tool_response|function_call|im_start|im_end|eot_id|start_header_id)\|?>|\[TOOL_CALLS\]",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]{2,}")


def usable_answer(text: str) -> bool:
    """True when ``text`` reads as an answer to the operator.

    Not usable: nothing, or no word of letters; a tool call the model wrote as text instead
    of making it (a JSON object with ``name`` and ``arguments``/``parameters``); or
    chat-template markup (``<tool_call>``, ``<|im_start|>``) with no word besides.
    Small models produce these when they are given too many tools or too little room.
    """
    body = clean_answer(text)
    stripped = body.strip()
    if stripped[:1] in "{[":
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        calls = parsed if isinstance(parsed, list) else [parsed]
        if calls and all(isinstance(c, dict) and "name" in c and ({"arguments", "parameters"} & set(c))
                         for c in calls):
            return False
    return bool(_WORD.search(_MARKUP.sub(" ", body)))


def cited_steps(answer: str, n_steps: int) -> list[int]:
    """Step numbers the answer cites as ``[n]`` or ``[n, m]``, in order, within 1..n_steps."""
    seen: dict[int, None] = {}
    for match in _CITE.finditer(answer or ""):
        for part in match.group(1).split(","):
            n = int(part)
            if 1 <= n <= n_steps:
                seen[n] = None
    return list(seen)


def message_text(content: Any) -> str:
    """Text of an AIMessage ``content`` (a string or content blocks), think-blocks removed."""
    return clean_answer(result_text(content))


_QUIET_KEYS = {"truncated", "next_cursor"}
_ID_KEYS = (
    "signature",
    "name",
    "orderId",
    "order_id",
    "trace_id",
    "traceId",
    "metric_name",
    "service",
    "message",
    "id",
)


def _preview(items: list[Any]) -> str:
    """``[n]`` or, for lists of records, ``[n: first-id ×count, second-id …]``."""
    labels = []
    for item in items[:2]:
        if isinstance(item, dict):
            key = next((k for k in _ID_KEYS if isinstance(item.get(k), (str, int)) and item.get(k) != ""), None)
            if key is None:
                break
            label = _cut(str(item[key]), 40)
            if isinstance(item.get("count"), int):
                label += f" ×{item['count']}"
            labels.append(label)
        elif isinstance(item, (str, int, float)) and len(items) <= 3:
            labels.append(_cut(str(item), 40))
        else:
            break
    if not labels:
        return f"[{len(items)}]"
    more = ", …" if len(items) > len(labels) else ""
    return f"[{len(items)}: " + ", ".join(labels) + more + "]"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
