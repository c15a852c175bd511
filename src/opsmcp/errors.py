"""Errors that toolsets and backends raise for failures they anticipate.

Toolsets and backends never import MCP types. They raise :class:`OpsError` (or a
subclass); the server's choke point (:mod:`opsmcp.server`) turns it into an MCP tool
error (``isError: true``) whose text is the message followed by the hint, so the model
reads what was wrong and what to try next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OpsError(Exception):
    """An anticipated failure: bad input, a missing resource, a backend that is down.

    Args:
        message: what went wrong, in one sentence, naming the offending value.
        hint: what the caller can do next (a corrected call, a tool to use first).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        return f"{self.message}{chr(10) if chr(10) in self.message else ' '}Next step: {self.hint}"


class NotFound(OpsError):
    """A named resource (queue, order, table, playbook, trace) does not exist."""


class InvalidInput(OpsError):
    """An argument is well-typed but wrong: a reversed time range, a non-DLQ, bad syntax."""


class BackendUnavailable(OpsError):
    """An external system did not answer in time or refused the connection."""


class WritesDisabled(OpsError):
    """A write was requested but the operator has not enabled writes."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` names from ``candidates`` closest to ``name``.

    Prefix and substring matches come first, then difflib's similarity ranking, so a
    truncated or slightly misspelt name still finds its target.
    """
    pool = list(dict.fromkeys(candidates))
    low = name.lower()
    first = [c for c in pool if low and (c.lower().startswith(low) or low in c.lower())]
    fuzzy = difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    return list(dict.fromkeys(first + fuzzy))[:n]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 5, *, sentence: bool = False) -> str:
    """``"did you mean 'a', 'b'?"`` naming the :func:`closest` candidates, or ``""`` when none
    is close: the one wording of every "unknown name" answer (tools, resources, prompts).
    ``sentence``: capitalised (``"Did you mean ..."``), to follow a full stop."""
    near = closest(name, candidates, n)
    if not near:
        return ""
    return ("Did" if sentence else "did") + " you mean " + ", ".join(repr(c) for c in near) + "?"


def not_found(kind: str, name: str, candidates: Iterable[str], list_tool: str | None = None) -> NotFound:
    """Build a :class:`NotFound` for ``kind`` ``name`` that lists the closest existing names."""
    hint = did_you_mean(name, candidates)
    if not hint:
        hint = f"call {list_tool} to see what exists." if list_tool else "check the name."
    return NotFound(f"No {kind} named {name!r}.", hint)
