"""How opsmcp logs: one stderr handler for every logger, in text or JSON Lines.

:func:`configure` installs one handler on the root logger (stderr: stdout is the stdio MCP
wire) at ``OPSMCP_LOG_LEVEL`` and points uvicorn's loggers at it, so the setting holds for
opsmcp, the MCP SDK, uvicorn, botocore and everything else. ``OPSMCP_LOG_FORMAT=json``
writes one JSON object per line (``time``, ``level``, ``logger``, ``message`` and the
record's structured fields) for log shippers.

What is logged, by level:

- INFO: one line per tool call (logger ``opsmcp.calls``, :func:`tool_call_line`): tool,
  caller, duration, outcome, JSON-RPC request id, argument and result sizes in bytes;
  never argument values (they may hold secrets);
- DEBUG: also one line per backend call (logger ``opsmcp.backends``, :func:`backend_call_line`):
  the system, the operation, its duration and outcome.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opsmcp.times import iso

#: Loggers of the HTTP server that keep handlers of their own unless pointed at ours.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The mcp SDK's logger of tool calls ("Tool 'x' failed: <message>").
SDK_TOOL_LOGGER = "mcp.server.mcpserver.server"
#: Structured fields a record may carry (``extra={"fields": {...}}``), shown as key=value in text.
FIELDS = "fields"

calls_log = logging.getLogger("opsmcp.calls")
backends_log = logging.getLogger("opsmcp.backends")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO-8601 UTC), ``level``, ``logger``, ``message``,
    the record's structured fields, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": iso(datetime.fromtimestamp(record.created, UTC)), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        out.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` (the structured fields after the message)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        if not fields:
            return text
        head, sep, tail = text.partition("\n")  # a traceback stays below the line
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return f"{head} {pairs}{sep}{tail}"


def level_of(name: str | None) -> int:
    """The logging level named ``name`` (case-insensitive); WARNING for an unknown name."""
    upper = (name or "").upper()
    return getattr(logging, upper) if upper in LEVELS else logging.WARNING


def configure(level: str | None = "WARNING", fmt: str | None = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``), for every logger.

    Replaces the root logger's handlers with one stderr handler, sets the root level, and
    makes uvicorn's loggers propagate to it (their own handlers removed), so one setting
    governs every library's logging. Safe to call again (the last call wins).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if (fmt or "").lower() == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_of(level))
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # The SDK logs each failed tool call at INFO with the error's text, which may quote an
    # argument; opsmcp's own line (tool_call_line) says the same without values. DEBUG shows both.
    logging.getLogger(SDK_TOOL_LOGGER).setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)


def tool_call_line(tool: str, *, caller: str | None, seconds: float, outcome: str, request_id: Any,
                   argument_bytes: int | None, result_bytes: int | None, error: str | None = None) -> None:
    """Log one tool call at INFO on ``opsmcp.calls`` (see the module docstring); ``error``:
    the failure's class name (never its text, which may quote an argument)."""
    fields = {"tool": tool, "caller": caller, "duration_ms": round(seconds * 1000, 2), "outcome": outcome,
              "request_id": request_id, "argument_bytes": argument_bytes, "result_bytes": result_bytes,
              "error": error}
    calls_log.info("tool call %s %s", tool, outcome, extra={FIELDS: fields})


def backend_call_line(system: str, operation: str, seconds: float, outcome: str) -> None:
    """Log one backend call at DEBUG on ``opsmcp.backends``: ``system`` (sqs, dynamodb,
    prometheus, logs...), ``operation`` (what was done, in words or the API's name), its
    duration and ``outcome`` (``ok`` or the error's class name)."""
    fields = {"system": system, "operation": operation, "duration_ms": round(seconds * 1000, 2),
              "outcome": outcome}
    backends_log.debug("backend call %s %s", system, outcome, extra={FIELDS: fields})
