"""CloudWatch Logs requests for the log tools, as pure functions (pinned by tests).

Nothing here talks to AWS. Two kinds of request text are built:

- **Logs Insights queries** (:func:`search_query`, :func:`stats_query`,
  :func:`facets_query`): ``fields`` / ``filter`` / ``stats`` / ``sort`` / ``limit``.
- **FilterLogEvents patterns** (:func:`json_pattern`): a JSON filter pattern that narrows
  what the service returns; every event is then checked here exactly, so a pattern is
  only ever a narrowing, never the answer.

Escaping. No argument's text reaches an Insights query except inside a regular-expression
literal built by :func:`regex_literal`, which passes ASCII letters, digits, ``_`` and ``-``
and writes every other character as ``\\x{HEX}``: a quote, ``/``, ``|``, ``#``, a
backtick, a newline or a backslash from an argument can never end the literal, start a
comment or add a pipe command. Field names come from the operator's settings and must be
plain dotted names (:class:`Fields`). Filter patterns take a value only when it is made
of a small safe alphabet (:data:`SAFE_VALUE`); any other value is left out of the pattern
(the exact check here still applies it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opsmcp.backends.fulltext import Tree, raw_words
from opsmcp.backends.logbackend import level_spellings, with_field_overrides

MAX_INSIGHTS_LIMIT = 10_000  # Logs Insights returns at most 10,000 rows per query
MAX_PATTERN_CHARS = 1024  # FilterLogEvents' filterPattern length limit
FIELD_NAME = re.compile(r"^@?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:@/+=, -]{1,200}$")
_LITERAL_OK = re.compile(r"[A-Za-z0-9_-]")


@dataclass(frozen=True)
class Fields:
    """JSON field names of the log lines (``OPSMCP_CLOUDWATCH_FIELDS``); the defaults are
    the names ``opsmcp logs load --to cloudwatch`` and the sandbox write."""

    level: str = "level"
    service: str = "service"
    message: str = "message"
    trace_id: str = "trace_id"
    event_id: str = "event_id"

    @classmethod
    def from_overrides(cls, overrides: dict[str, str], setting: str = "OPSMCP_CLOUDWATCH_FIELDS") -> Fields:
        """Defaults with ``overrides`` (keys: the attribute names).

        Raises:
            InvalidInput: an unknown key, or a name that is not a plain (dotted) field name.
        """
        return with_field_overrides(cls, overrides, setting, FIELD_NAME)


# --------------------------------------------------------------------------- literals


def regex_escape(value: str) -> str:
    """``value`` as regex text matching it literally: ASCII letters, digits, ``_`` and ``-``
    as they are, every other character as ``\\x{HEX}`` (RE2 and Java both read it)."""
    return "".join(c if _LITERAL_OK.match(c) else f"\\x{{{ord(c):x}}}" for c in value)


def regex_literal(body: str) -> str:
    """``/body/`` — ``body`` must already be escaped (:func:`regex_escape`) or our own text."""
    if "/" in body or "\n" in body:
        raise ValueError("regex_literal: the body must be escaped")  # a bug here, never user input
    return f"/{body}/"


def exact_regex(values: Sequence[str], *, ignore_case: bool = False) -> str:
    """A regex literal matching a whole value equal to one of ``values``."""
    alts = "|".join(regex_escape(v) for v in values)
    return regex_literal(("(?i)" if ignore_case else "") + f"^({alts})$")


def text_regex(node: Tree) -> str:
    """The regex (without delimiters) of one word, prefix or phrase node: whole words,
    case-insensitive, separated by any non-word characters in a phrase. Words are matched
    as written: unlike the embedded store, ``cafe`` does not find ``café``."""
    toks = raw_words(node[1])
    if not toks:
        return r"\b\B"  # matches nothing (RE2 has no lookahead): a "phrase" of punctuation has no words
    body = r"\W+".join(regex_escape(t) for t in toks)
    tail = "" if node[0] == "prefix" else r"\b"
    return rf"(?i)\b{body}{tail}"


def text_filter(tree: Tree, target: str) -> str:
    """A full-text tree as an Insights boolean expression over the field ``target``."""
    kind = tree[0]
    if kind in ("word", "prefix", "phrase"):
        return f"{target} =~ {regex_literal(text_regex(tree))}"
    if kind == "not":
        return f"({text_filter(tree[1], target)} and not {text_filter(tree[2], target)})"
    joiner = " or " if kind == "or" else " and "
    return "(" + joiner.join(text_filter(t, target) for t in tree[1]) + ")"


# --------------------------------------------------------------------------- Insights queries

TEXT = "opsmcp_text"


def _conditions(f: Fields, *, tree: Tree | None, service: str | None, levels: Sequence[str] | None,
                trace_ids: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    if service is not None:
        out.append(f"{f.service} =~ {exact_regex([service])}")
    if levels:
        out.append(f"{f.level} =~ {exact_regex(level_spellings(levels), ignore_case=True)}")
    if trace_ids:
        out.append(f"{f.trace_id} =~ {exact_regex(trace_ids)}")
    if tree is not None:
        out.append(text_filter(tree, TEXT))
    return out


def _head(f: Fields, conditions: list[str], *, text: bool) -> list[str]:
    shown = "@timestamp, @message, @log, @logStream, @ptr"
    if text:
        shown += f", coalesce({f.message}, @message) as {TEXT}" if f.message != "@message" else f", @message as {TEXT}"
    parts = [f"fields {shown}"]
    if conditions:
        parts.append("filter " + " and ".join(conditions))
    return parts


def search_query(f: Fields, *, tree: Tree | None = None, service: str | None = None,
                 levels: Sequence[str] | None = None, trace_ids: Sequence[str] | None = None,
                 limit: int = 50, oldest_first: bool = False) -> str:
    """Lines matching every filter, newest first (oldest first for a trace), at most
    ``limit`` (clamped to :data:`MAX_INSIGHTS_LIMIT`). The window is StartQuery's own
    ``startTime``/``endTime`` (whole seconds); rows are checked to the millisecond here."""
    conds = _conditions(f, tree=tree, service=service, levels=levels, trace_ids=trace_ids)
    parts = _head(f, conds, text=tree is not None)
    parts.append(f"sort @timestamp {'asc' if oldest_first else 'desc'}")
    parts.append(f"limit {max(1, min(int(limit), MAX_INSIGHTS_LIMIT))}")
    return " | ".join(parts)


def interval_literal(interval_ms: int) -> str:
    """An Insights time period: ``300s``, or ``1500ms`` when not whole seconds."""
    return f"{interval_ms // 1000}s" if interval_ms % 1000 == 0 else f"{interval_ms}ms"


def stats_query(f: Fields, *, group_by: str, interval_ms: int, service: str | None = None,
                levels: Sequence[str] | None = None) -> str:
    """Line counts (and first/last time) per bucket of ``interval_ms`` and per level or service:
    ``stats count(*) as n, min(@timestamp) as first, max(@timestamp) as last by bin(…) as bucket, <field>``."""
    key = f.level if group_by == "level" else f.service
    conds = _conditions(f, tree=None, service=service, levels=levels, trace_ids=None)
    parts = ["filter " + " and ".join(conds)] if conds else []
    parts.append(f"stats count(*) as n, min(@timestamp) as first, max(@timestamp) as last "
                 f"by bin({interval_literal(interval_ms)}) as bucket, {key} as grp")
    return " | ".join(parts)


def facets_query(f: Fields) -> str:
    """Line counts per service and level (one query; the caller sums each side)."""
    return f"stats count(*) as n by {f.service} as svc, {f.level} as lvl"


# --------------------------------------------------------------------------- FilterLogEvents


def _json_value(value: str) -> str | None:
    return f'"{value}"' if SAFE_VALUE.match(value) else None


def json_pattern(f: Fields, *, service: str | None = None, levels: Sequence[str] | None = None,
                 trace_ids: Sequence[str] | None = None) -> str:
    """A JSON filter pattern narrowing FilterLogEvents to lines whose fields may match, e.g.
    ``{ ($.service = "api") && ($.level = "ERROR" || $.level = "error") }``; ``""`` when
    nothing can be narrowed safely (a value outside :data:`SAFE_VALUE` is left out, as are
    nested field names the pattern syntax cannot take). Always a superset of the answer."""
    clauses: list[str] = []

    def clause(field: str, values: Sequence[str]) -> None:
        if field.startswith("@"):
            return
        quoted = [_json_value(v) for v in values]
        if values and all(quoted):
            clauses.append("(" + " || ".join(f"$.{field} = {q}" for q in quoted) + ")")

    if service is not None:
        clause(f.service, [service])
    if levels:
        clause(f.level, level_spellings(levels, cases=True))
    if trace_ids:
        clause(f.trace_id, list(trace_ids))
    if not clauses:
        return ""
    pattern = "{ " + " && ".join(clauses) + " }"
    return pattern if len(pattern) <= MAX_PATTERN_CHARS else ""


def trace_pattern_chunks(f: Fields, trace_ids: Sequence[str], levels: Sequence[str] | None = None) -> list[list[str]]:
    """``trace_ids`` split into chunks whose :func:`json_pattern` fits in
    :data:`MAX_PATTERN_CHARS`; an id the pattern cannot take gets a chunk of its own (which
    then reads its window unnarrowed)."""
    chunks: list[list[str]] = []
    for tid in trace_ids:
        if chunks and json_pattern(f, levels=levels, trace_ids=[*chunks[-1], tid]):
            chunks[-1].append(tid)
        else:
            chunks.append([tid])
    return chunks


# --------------------------------------------------------------------------- results


def row(fields_list: list[dict[str, Any]]) -> dict[str, str]:
    """One GetQueryResults row (``[{"field": .., "value": ..}]``) as a dict."""
    return {str(c.get("field")): str(c.get("value", "")) for c in fields_list if isinstance(c, dict)}
