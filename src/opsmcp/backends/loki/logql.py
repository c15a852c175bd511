"""LogQL for the log tools, as pure functions (pinned by tests, parsed by Grafana's grammar).

Every value that comes from an argument goes through :func:`string` (a Go string literal:
what LogQL's parser unquotes) and, inside a regular expression, through :func:`regex_escape`
first — one way in, so no argument can close a string, add a pipeline stage or change a
selector. Field and label names come from the operator's settings and are checked
(:func:`check_names`).

What the queries look like (``sel`` is ``OPSMCP_LOKI_SELECTOR`` plus a service matcher)::

    {sel} |~ "(?i)\\\\btimeout\\\\b" | json opsmcp_level="level" | opsmcp_level=~"(?i)^(ERROR|ERR)$"
    sum by (opsmcp_level) (count_over_time({sel} | json opsmcp_level="level"
        | drop __error__, __error_details__ [300000ms]))

Full text: a raw-line regex filter per word that must appear (ASCII words only: JSON never
escapes them, so the filter only narrows), and the exact check of each line's message in
Python (:func:`opsmcp.backends.fulltext.matches`): a line filter alone cannot tell the
message from the line's other JSON fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from opsmcp.backends.fulltext import Tree, words
from opsmcp.backends.logbackend import level_spellings, with_field_overrides
from opsmcp.errors import InvalidInput

LEVEL = "opsmcp_level"
TRACE = "opsmcp_trace"
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JSON_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SELECTOR = re.compile(r'^\{\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"'
                      r'(\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*")*\s*\}$')
_LITERAL_OK = re.compile(r"[A-Za-z0-9_]")
_ASCII_WORD = re.compile(r"^[a-z0-9]+$")
DROP_ERRORS = "drop __error__, __error_details__"


@dataclass(frozen=True)
class Fields:
    """JSON field names of the lines (``OPSMCP_LOKI_FIELDS``); the service is a stream label."""

    level: str = "level"
    message: str = "message"
    trace_id: str = "trace_id"
    event_id: str = "event_id"

    @classmethod
    def from_overrides(cls, overrides: dict[str, str]) -> Fields:
        """Defaults with ``overrides``.

        Raises:
            InvalidInput: an unknown key or a name that is not a plain (dotted) field name.
        """
        return with_field_overrides(cls, overrides, "OPSMCP_LOKI_FIELDS", JSON_PATH)


def check_names(selector: str, service_label: str) -> None:
    """Check the operator's selector and service label.

    Raises:
        InvalidInput: the selector is not ``{label op "value", ...}`` or the label name is not one.
    """
    if not SELECTOR.match(selector.strip()):
        raise InvalidInput(f"OPSMCP_LOKI_SELECTOR={selector!r} is not a LogQL stream selector.",
                           'use e.g. {service_name=~".+"} or {namespace="shop", app=~"order.*"}.')
    if not LABEL_NAME.match(service_label):
        raise InvalidInput(f"OPSMCP_LOKI_SERVICE_LABEL={service_label!r} is not a label name.",
                           "use letters, digits and _, e.g. service_name or app.")


# --------------------------------------------------------------------------- escaping


def string(value: str) -> str:
    """``value`` as a LogQL (Go) double-quoted string literal: ``"`` and ``\\`` escaped,
    control characters as ``\\uXXXX``; a string it unquotes to ``value`` exactly."""
    return json.dumps(value, ensure_ascii=False)


def regex_escape(value: str) -> str:
    """``value`` as RE2 text matching it literally: ASCII letters, digits and ``_`` as they
    are, every other character as ``\\x{HEX}``."""
    return "".join(c if _LITERAL_OK.match(c) else f"\\x{{{ord(c):x}}}" for c in value)


def exact_regex(values: Sequence[str], *, ignore_case: bool = False) -> str:
    """A regex matching a whole value equal to one of ``values``."""
    return ("(?i)" if ignore_case else "") + "^(" + "|".join(regex_escape(v) for v in values) + ")$"


# --------------------------------------------------------------------------- pieces


def selector(base: str, service_label: str, service: str | None) -> str:
    """The stream selector: the operator's, plus ``service_label="service"`` when given."""
    base = base.strip()
    if service is None:
        return base
    return base[:-1].rstrip() + f", {service_label}={string(service)}}}"


def _needed(tree: Tree) -> list[list[str]]:
    """Regexes of which, per inner list, at least one must match the raw line (a narrowing)."""
    kind = tree[0]
    if kind in ("word", "phrase", "prefix"):
        if not tree[1].isascii():  # folded, it may not be what the raw line holds: no narrowing
            return []
        toks = words(tree[1])
        out = []
        for i, t in enumerate(toks):
            if not _ASCII_WORD.match(t):
                continue
            tail = "" if kind == "prefix" and i == len(toks) - 1 else r"\b"
            out.append([rf"\b{t}{tail}"])
        return out
    if kind == "not":
        return _needed(tree[1])
    if kind == "and":
        return [r for t in tree[1] for r in _needed(t)]
    alts: list[str] = []
    for t in tree[1]:
        need = _needed(t)
        if not need:
            return []
        alts += need[0]
    return [list(dict.fromkeys(alts))]


def line_filters(tree: Tree | None) -> list[str]:
    """``|~`` stages narrowing to lines that can match ``tree`` (case-insensitive)."""
    if tree is None:
        return []
    out = []
    for alts in _needed(tree):
        body = alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"
        out.append(f"|~ {string('(?i)' + body)}")
    return out


def pipeline(f: Fields, *, tree: Tree | None = None, levels: Sequence[str] | None = None,
             trace_ids: Sequence[str] | None = None, extract_level: bool = False) -> list[str]:
    """The stages after the selector: line filters first (cheap), then one ``json`` stage
    extracting only what the label filters need, then those filters."""
    stages = line_filters(tree)
    if trace_ids:
        stages.append(f"|= {string(trace_ids[0])}" if len(trace_ids) == 1
                      else f"|~ {string(exact_regex(trace_ids)[1:-1])}")
    extract = []
    if levels or extract_level:
        extract.append(f"{LEVEL}={string(f.level)}")
    if trace_ids:
        extract.append(f"{TRACE}={string(f.trace_id)}")
    if extract:
        stages.append("| json " + ", ".join(extract))
        stages.append(f"| {DROP_ERRORS}")
    if levels:
        stages.append(f"| {LEVEL}=~{string(exact_regex(level_spellings(levels), ignore_case=True))}")
    if trace_ids:
        stages.append(f"| {TRACE}={string(trace_ids[0])}" if len(trace_ids) == 1
                      else f"| {TRACE}=~{string(exact_regex(trace_ids))}")
    return stages


def log_query(sel: str, stages: Sequence[str]) -> str:
    """A log query: selector and pipeline."""
    return " ".join([sel, *stages])


def duration_ms(ms: int) -> str:
    """A LogQL range duration in milliseconds (``300000ms``)."""
    return f"{max(1, int(ms))}ms"


def count_query(sel: str, stages: Sequence[str], range_ms: int, by: str | None = None) -> str:
    """``sum [by (label)] (count_over_time(<log query> [range]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (count_over_time({log_query(sel, stages)} [{duration_ms(range_ms)}]))"
