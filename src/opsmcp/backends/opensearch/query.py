"""OpenSearch request bodies for the log tools, as pure functions (pinned by tests).

Nothing here talks to a cluster. :class:`Fields` names the document fields;
:class:`Mapping` says, per field, how an exact match is written (``term`` on a keyword
field or its ``.keyword`` sub-field, or ``match_phrase`` on a text-only field followed by
an exact check of each hit); :func:`simple_query` turns the tools' full-text syntax
(words, "phrases", AND/OR/NOT in capitals, prefix*, parentheses) into a
``simple_query_string`` with explicit precedence, refusing what it cannot express.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opsmcp.backends import fulltext
from opsmcp.backends.logbackend import ERROR_LEVELS, level_spellings, ms_iso, with_field_overrides
from opsmcp.errors import InvalidInput

SQS_FLAGS = "AND|OR|NOT|PHRASE|PREFIX|PRECEDENCE|WHITESPACE|ESCAPE"
MAX_RESULT_WINDOW = 10_000  # OpenSearch's index.max_result_window: never page with `from` beyond it


@dataclass(frozen=True)
class Fields:
    """Document field names (``OPSMCP_OPENSEARCH_FIELDS``); defaults are the fixture
    template's (``tests/fixtures/ops_agent/log_index_template.json``)."""

    timestamp: str = "@timestamp"
    level: str = "level"
    service: str = "service"
    message: str = "message"
    trace_id: str = "trace_id"
    event_id: str = "event_id"

    @classmethod
    def from_overrides(cls, overrides: dict[str, str]) -> Fields:
        """Defaults with ``overrides`` (keys: the attribute names).

        Raises:
            InvalidInput: an unknown key.
        """
        return with_field_overrides(cls, overrides, "OPSMCP_OPENSEARCH_FIELDS")


@dataclass
class Mapping:
    """How each logical field is matched exactly, read once from the index mapping.

    ``exact[name]`` is the field to use in ``term``/``terms``/aggregations (the field
    itself when it is ``keyword``, else its keyword sub-field); a name in ``phrase_only``
    is a ``text`` field without one: matched with ``match_phrase`` and every hit checked
    for equality. ``types`` records what the mapping said (for ``opsmcp doctor``).
    """

    exact: dict[str, str] = field(default_factory=dict)
    phrase_only: set[str] = field(default_factory=set)
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def assumed(cls, f: Fields) -> Mapping:
        """No mapping known (no index yet): every exact field used as is."""
        return cls(exact={n: getattr(f, n) for n in ("level", "service", "trace_id", "event_id")})


def _lookup(properties: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """The mapping entry of ``dotted`` (``a.b`` = properties a → properties b, or a literal dotted name)."""
    if dotted in properties:
        entry = properties[dotted]
        return entry if isinstance(entry, dict) else None
    head, _, rest = dotted.partition(".")
    if rest and isinstance(properties.get(head), dict):
        return _lookup(properties[head].get("properties", {}), rest)
    return None


def resolve_mapping(f: Fields, mappings: dict[str, Any]) -> Mapping:
    """The :class:`Mapping` for a ``GET <pattern>/_mapping`` answer (one entry per index).

    A field counts as keyword only if it is keyword (or has a keyword sub-field) in every
    index that maps it; one index with a text-only field makes it phrase-only (safe: the
    exact check then runs on every hit).
    """
    out = Mapping()
    for name in ("level", "service", "trace_id", "event_id", "timestamp", "message"):
        path = getattr(f, name)
        kinds: list[tuple[str, str | None]] = []  # (type, keyword sub-field or None)
        for index in mappings.values():
            props = (index or {}).get("mappings", {}).get("properties", {})
            entry = _lookup(props, path)
            if entry is None:
                continue
            sub = next((f"{path}.{k}" for k, v in (entry.get("fields") or {}).items()
                        if isinstance(v, dict) and v.get("type") == "keyword"), None)
            kinds.append((str(entry.get("type", "object")), sub))
        if not kinds:
            out.types[name] = "unmapped"
            out.exact[name] = path
            continue
        out.types[name] = "/".join(sorted({k for k, _ in kinds}))
        if name in ("timestamp", "message"):
            continue
        if all(k == "keyword" for k, _ in kinds):
            out.exact[name] = path
        elif all(k == "keyword" or sub for k, sub in kinds):
            subs = {sub for k, sub in kinds if k != "keyword" and sub}
            out.exact[name] = subs.pop() if len(subs) == 1 else f"{path}.keyword"
            out.types[name] += " (+keyword)"
        else:
            out.phrase_only.add(name)
    return out


# --------------------------------------------------------------------------- full text


def _escape(word: str) -> str:
    return re.sub(r'([+|\-"*()~\\])', r"\\\1", word)


def _emit(tree: Any) -> str:
    kind = tree[0]
    if kind == "word":
        return _escape(tree[1])
    if kind == "prefix":
        return _escape(tree[1]) + "*"
    if kind == "phrase":
        return '"' + tree[1].replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == "not":
        return f"({_emit(tree[1])} +-{_emit(tree[2])})"
    joiner = " | " if kind == "or" else " +"
    return "(" + joiner.join(_emit(t) for t in tree[1]) + ")"


def simple_query(query: str) -> str:
    """The tools' full-text syntax as a ``simple_query_string`` query with explicit
    precedence (NOT binds tightest, then AND — also implicit —, then OR).

    ``timeout NOT retry`` → ``(timeout +-retry)``; ``a OR b c`` → ``(a | (b +c))``;
    a word with punctuation (``orders-db.cluster``) becomes a phrase, as the embedded
    store treats it.

    Raises:
        InvalidInput: unbalanced quotes or parentheses, a dangling operator, or NEAR
            (which simple_query_string cannot express).
    """
    tree = fulltext.parse(query, engine="OpenSearch")
    out = _emit(tree)
    return out[1:-1] if out.startswith("(") and out.endswith(")") and tree[0] in ("and", "or") else out


# --------------------------------------------------------------------------- clauses


def exact_clause(mapping: Mapping, name: str, f: Fields, values: Sequence[str]) -> dict[str, Any]:
    """A filter clause matching ``name`` exactly equal to one of ``values``.

    ``term``/``terms`` on the exact field; for a phrase-only field, ``match_phrase`` (one
    per value, any of them) — the caller must then keep only hits equal to a value.
    """
    if name in mapping.phrase_only:
        path = getattr(f, name)
        phrases = [{"match_phrase": {path: v}} for v in values]
        return phrases[0] if len(phrases) == 1 else {"bool": {"should": phrases, "minimum_should_match": 1}}
    target = mapping.exact.get(name, getattr(f, name))
    return {"term": {target: values[0]}} if len(values) == 1 else {"terms": {target: list(values)}}


def time_clause(f: Fields, start_ms: int | None, end_ms: int | None) -> dict[str, Any] | None:
    """``range`` on the timestamp (inclusive, ISO-8601 UTC with milliseconds), or None."""
    bounds: dict[str, Any] = {}
    if start_ms is not None:
        bounds["gte"] = ms_iso(start_ms)
    if end_ms is not None:
        bounds["lte"] = ms_iso(end_ms)
    return {"range": {f.timestamp: bounds}} if bounds else None


def filters(
    f: Fields, mapping: Mapping, *, service: str | None = None, levels: Sequence[str] | None = None,
    trace_ids: Sequence[str] | None = None, start_ms: int | None = None, end_ms: int | None = None,
) -> list[dict[str, Any]]:
    """The ``bool.filter`` clauses for the exact filters and the window."""
    out: list[dict[str, Any]] = []
    if service is not None:
        out.append(exact_clause(mapping, "service", f, [service]))
    if levels:
        out.append({"terms": {mapping.exact.get("level", f.level): level_spellings(levels, cases=True)}})
    if trace_ids:
        out.append(exact_clause(mapping, "trace_id", f, list(trace_ids)))
    rng = time_clause(f, start_ms, end_ms)
    if rng:
        out.append(rng)
    return out


def bool_query(clauses: list[dict[str, Any]], text: str | None, f: Fields) -> dict[str, Any]:
    """``{"bool": {"filter": clauses, "must": [simple_query_string]}}`` (or match_all)."""
    body: dict[str, Any] = {}
    if clauses:
        body["filter"] = clauses
    if text is not None:
        body["must"] = [{"simple_query_string": {
            "query": text, "fields": [f.message], "default_operator": "and", "flags": SQS_FLAGS,
        }}]
    return {"bool": body} if body else {"match_all": {}}


def tiebreaker(version: str) -> str:
    """The unique sort field that breaks timestamp ties: ``_shard_doc`` (OpenSearch 3.3+,
    cheap, point in time only), else ``_id`` (older engines reject ``_shard_doc``)."""
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return "_id"
    return "_shard_doc" if (major, minor) >= (3, 3) else "_id"


def sort_newest_first(f: Fields, *, tiebreak: str | None) -> list[dict[str, Any]]:
    """Newest first, then ``tiebreak`` (a unique field), so search_after never skips or repeats."""
    out: list[dict[str, Any]] = [{f.timestamp: {"order": "desc"}}]
    if tiebreak:
        out.append({tiebreak: {"order": "desc"}})
    return out


def search_body(
    f: Fields, mapping: Mapping, *, text: str | None, clauses: list[dict[str, Any]], size: int,
    pit_id: str | None, keep_alive: str, search_after: list[Any] | None, count: bool, tiebreak: str = "_shard_doc",
) -> dict[str, Any]:
    """One page of ``search_logs``: newest first, ``size`` hits, in a point in time when
    ``pit_id`` is given (then without an index in the path), continuing ``search_after``.
    Never uses ``from``: deep pages are search_after pages."""
    body: dict[str, Any] = {
        "size": size,
        "query": bool_query(clauses, text, f),
        "sort": sort_newest_first(f, tiebreak=tiebreak if pit_id is not None else None),
        "track_total_hits": (MAX_RESULT_WINDOW if text is not None else True) if count else False,
    }
    if pit_id is not None:
        body["pit"] = {"id": pit_id, "keep_alive": keep_alive}
    if search_after is not None:
        body["search_after"] = search_after
    return body


def trace_body(f: Fields, mapping: Mapping, trace_id: str, size: int, *, extra: list[dict[str, Any]] | None = None,
               errors_only: bool = False, newest_first: bool = False) -> dict[str, Any]:
    """The lines of one trace (oldest first unless ``newest_first``), optionally only its
    ERROR/CRITICAL/FATAL lines; ``extra`` adds filter clauses."""
    clauses = [exact_clause(mapping, "trace_id", f, [trace_id]), *(extra or [])]
    if errors_only:
        clauses.append({"terms": {mapping.exact.get("level", f.level): level_spellings(ERROR_LEVELS, cases=True)}})
    return {
        "size": size,
        "query": {"bool": {"filter": clauses}},
        "sort": [{f.timestamp: {"order": "desc" if newest_first else "asc"}}],
        "track_total_hits": True,
    }


def stats_body(f: Fields, mapping: Mapping, *, group_by: str, interval_ms: int, start_ms: int, end_ms: int,
               service: str | None, levels: Sequence[str] | None, max_groups: int = 200) -> dict[str, Any]:
    """Counts per group per bucket: ``terms`` on the group's exact field, each with a
    ``date_histogram`` (``fixed_interval`` in ms, aligned to the epoch, empty buckets
    included over the window) and the group's first/last timestamps.

    Raises:
        InvalidInput: the grouped field is text-only (no aggregation possible).
    """
    if group_by in mapping.phrase_only:
        raise InvalidInput(f"Cannot count per {group_by}: the OpenSearch field {getattr(f, group_by)!r} is text "
                           "without a keyword sub-field.", f"map {getattr(f, group_by)} as keyword (see the README).")
    clauses = filters(f, mapping, service=service, levels=levels, start_ms=start_ms, end_ms=end_ms)
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": clauses}},
        "aggs": {"groups": {
            "terms": {"field": mapping.exact.get(group_by, getattr(f, group_by)), "size": max_groups},
            "aggs": {
                "buckets": {"date_histogram": {
                    "field": f.timestamp, "fixed_interval": f"{interval_ms}ms", "min_doc_count": 0,
                    "extended_bounds": {"min": start_ms, "max": end_ms},
                }},
                "first": {"min": {"field": f.timestamp}},
                "last": {"max": {"field": f.timestamp}},
            },
        }},
    }


def facets_body(f: Fields, mapping: Mapping, size: int = 1000) -> dict[str, Any]:
    """Known services and levels with their counts (``terms`` aggregations)."""
    aggs: dict[str, Any] = {}
    for name in ("service", "level"):
        if name not in mapping.phrase_only:
            aggs[name] = {"terms": {"field": mapping.exact.get(name, getattr(f, name)), "size": size}}
    return {"size": 0, "aggs": aggs}


def edge_body(f: Fields, *, newest: bool) -> dict[str, Any]:
    """The oldest (or newest) line: one hit sorted by time (works where min/max aggs do not)."""
    return {"size": 1, "sort": [{f.timestamp: {"order": "desc" if newest else "asc"}}], "_source": [f.timestamp]}
