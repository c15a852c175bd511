"""OpenSearch as a :class:`~opsmcp.backends.logbackend.LogBackend` (opensearch-py, sync).

The index mapping is read once (on first use) to learn how each id field is matched
exactly (:func:`~.query.resolve_mapping`). Trace ids are always checked for equality on
every hit as well, so ids that share UUID segments can never mix, whatever the mapping.
Deep pages use a point in time and ``search_after`` (the cursor carries both); ``from``
is never used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opsmcp.backends.logbackend import (
    COUNT_CAP,
    Check,
    LogRecord,
    SearchPage,
    Stats,
    StatsGroup,
    TraceLines,
    errors_by_trace,
    levels_arg,
    ms_iso,
    ms_to_datetime,
    normalize_level,
    to_ms,
    trace_candidates,
    trace_lines,
)
from opsmcp.backends.logstore.parser import parse_timestamp
from opsmcp.backends.opensearch import query as q
from opsmcp.backends.opensearch.client import make_client, map_error, redact
from opsmcp.errors import InvalidInput, NotFound, OpsError

if TYPE_CHECKING:
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp.opensearch")
PIT_KEEP_ALIVE = "5m"
TRACE_FETCH = 2_000  # lines of one trace read at once (a trace is small)
PHRASE_SLACK = 50  # extra hits read when a phrase match may include other ids


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict) or not ({"p", "a"} <= state.keys() or "t" in state):
        raise InvalidInput(f"Cannot read cursor {cursor[:40]!r}.",
                           "pass next_cursor from the previous result unchanged.")
    return state


class OpenSearchLogs:
    """Log lines in OpenSearch indices matching ``index`` (a pattern such as ``cwl*``).

    Args:
        client: an ``opensearchpy.OpenSearch`` (or a compatible fake).
        index: the index pattern searched.
        fields: document field names.
        url: the cluster URL, for messages (credentials removed).
    """

    name = "opensearch"

    def __init__(self, client: Any, index: str = "cwl*", fields: q.Fields | None = None, url: str = "") -> None:
        self.client = client
        self.index = index
        self.fields = fields or q.Fields()
        self.url = redact(url)
        self._mapping: q.Mapping | None = None
        self._tiebreak: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenSearchLogs:
        """The backend ``OPSMCP_OPENSEARCH_*`` describe (see :func:`.client.make_client`)."""
        return cls(make_client(settings), settings.opensearch_index,
                   q.Fields.from_overrides(settings.opensearch_fields), settings.opensearch_url or "")

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(Exception):
            self.client.close()

    # ---------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Run one client call; every failure becomes an :mod:`opsmcp.errors` type."""
        try:
            return fn(**kwargs)
        except OpsError:
            raise
        except Exception as exc:
            log.debug("opensearch %s failed", what, exc_info=True)
            raise map_error(exc, url=self.url, index=self.index, what=what) from None

    def mapping(self) -> q.Mapping:
        """How fields match exactly, read from the index mapping once (until it exists)."""
        if self._mapping is None:
            try:
                resp = self._call("reading the index mapping", self.client.indices.get_mapping, index=self.index)
            except NotFound:
                return q.Mapping.assumed(self.fields)
            if not resp:
                return q.Mapping.assumed(self.fields)
            self._mapping = q.resolve_mapping(self.fields, resp)
        return self._mapping

    def tiebreak(self) -> str:
        """The sort tiebreaker this engine accepts (:func:`.query.tiebreaker`), asked once."""
        if self._tiebreak is None:
            info = self._call("reading the engine version", self.client.info)
            self._tiebreak = q.tiebreaker(str((info or {}).get("version", {}).get("number", "0.0")))
        return self._tiebreak

    def _record(self, hit: dict[str, Any], include_doc: bool, pit: str | None) -> LogRecord:
        f = self.fields
        src = hit.get("_source") or {}
        try:
            ts = parse_timestamp(src.get(f.timestamp))
        except (ValueError, OverflowError):
            ts = 0
        doc = None
        if include_doc:
            mine = {f.timestamp, f.level, f.service, f.message, f.trace_id, f.event_id}
            doc = json.dumps({k: v for k, v in src.items() if k not in mine}, default=str)
        sort = hit.get("sort")
        cursor = _encode({"p": pit, "a": sort}) if pit is not None and sort is not None else None
        trace, event = src.get(f.trace_id), src.get(f.event_id)
        return LogRecord(ts, str(src.get(f.service) or "unknown"), normalize_level(src.get(f.level)),
                         str(src.get(f.message) or ""), str(trace) if trace is not None else None,
                         str(event) if event is not None else None, doc, cursor)

    @staticmethod
    def _total(resp: dict[str, Any]) -> tuple[int, bool]:
        total = resp.get("hits", {}).get("total", 0)
        if isinstance(total, dict):
            return int(total.get("value", 0)), total.get("relation", "eq") == "eq"
        return int(total), True

    def _phrase_note(self, name: str) -> str:
        return (f"{name} is a text field without a keyword sub-field in {self.index}: matched as a phrase, then only "
                f"exact values kept; map {getattr(self.fields, name)} as keyword (see the README)")

    # ---------------------------------------------------------------- search

    def search(
        self, query: str | None = None, service: str | None = None, level: str | Sequence[str] | None = None,
        trace_id: str | None = None, start: datetime | None = None, end: datetime | None = None,
        limit: int = 50, cursor: str | None = None, *, include_doc: bool = False,
    ) -> SearchPage:
        """See :meth:`LogBackend.search`. Full text is ``simple_query_string`` over the
        message; pages are point-in-time + ``search_after``."""
        limit = max(1, min(int(limit), q.MAX_RESULT_WINDOW - 1))
        text = q.simple_query(query) if query and query.strip() else None
        levels = levels_arg(level)
        start_ms = to_ms(start) if start else None
        end_ms = to_ms(end) if end else None
        state = _decode(cursor) if cursor else None
        m = self.mapping()
        notes = [self._phrase_note("service")] if service is not None and "service" in m.phrase_only else []
        if trace_id is not None or (state is not None and "t" in state):
            return self._search_trace(text, service, levels, trace_id, start_ms, end_ms, limit, state, include_doc,
                                      notes)
        clauses = q.filters(self.fields, m, service=service, levels=levels, start_ms=start_ms, end_ms=end_ms)
        if state is None:
            try:
                pit = self._call("opening a point in time", self.client.create_pit, index=self.index,
                                 keep_alive=PIT_KEEP_ALIVE)["pit_id"]
            except NotFound:
                return SearchPage([], 0, True, None, [*notes, f"no index matches {self.index!r}"])
            after = None
        else:
            pit, after = state["p"], state["a"]
        body = q.search_body(self.fields, m, text=text, clauses=clauses, size=limit + 1, pit_id=pit,
                             keep_alive=PIT_KEEP_ALIVE, search_after=after, count=True, tiebreak=self.tiebreak())
        try:
            resp = self._call("search", self.client.search, body=body)
        except NotFound as exc:
            if state is not None:
                raise InvalidInput("The cursor expired (its point in time is gone).",
                                   "run the search again without cursor.") from exc
            raise
        pit = resp.get("pit_id", pit)
        hits = resp.get("hits", {}).get("hits", [])
        recs = [self._record(h, include_doc, pit) for h in hits[: limit + 1]]
        if service is not None and "service" in m.phrase_only:
            recs = [r for r in recs if r.service == service]
        total, exact = self._total(resp)
        more = len(recs) > limit
        recs = recs[:limit]
        next_cursor = recs[-1].cursor if more and recs else None
        if more and next_cursor is None:
            notes.append("more lines match, but this engine returned no sort values to continue from; "
                         "narrow the window to see them")
        if not more:
            self._close_pit(pit)
        return SearchPage(recs, total, exact, next_cursor, notes)

    def _close_pit(self, pit: str | None) -> None:
        if pit is None:
            return
        with contextlib.suppress(Exception):  # best effort: it expires on its own
            self.client.delete_pit(body={"pit_id": [pit]})

    def _search_trace(
        self, text: str | None, service: str | None, levels: list[str] | None, trace_id: str | None,
        start_ms: int | None, end_ms: int | None, limit: int, state: dict[str, Any] | None, include_doc: bool,
        notes: list[str],
    ) -> SearchPage:
        """A search within one trace: read the trace's matching lines (a trace is small),
        keep exact ids, page in memory newest first (cursor = the last line's time and id)."""
        if trace_id is None:
            raise InvalidInput("This cursor belongs to a search with trace_id.", "pass the same trace_id again.")
        m = self.mapping()
        clauses = q.filters(self.fields, m, service=service, levels=levels, start_ms=start_ms, end_ms=end_ms)
        if text is not None:
            clauses.append({"simple_query_string": {"query": text, "fields": [self.fields.message],
                                                    "default_operator": "and", "flags": q.SQS_FLAGS}})
        body = q.trace_body(self.fields, m, trace_id, COUNT_CAP, extra=clauses, newest_first=True)
        resp = self._call("trace search", self.client.search, index=self.index, body=body)
        hits = [h for h in resp.get("hits", {}).get("hits", [])
                if str((h.get("_source") or {}).get(self.fields.trace_id)) == trace_id]
        if "trace_id" in m.phrase_only:
            notes.append(self._phrase_note("trace_id"))
        keyed = sorted(((self._record(h, include_doc, None), str(h.get("_id", ""))) for h in hits),
                       key=lambda rk: (rk[0].ts_ms, rk[1]), reverse=True)
        exact = len(resp.get("hits", {}).get("hits", [])) < COUNT_CAP
        if state is not None:
            after = (int(state["t"][0]), str(state["t"][1]))
            keyed = [rk for rk in keyed if (rk[0].ts_ms, rk[1]) < after]
        total = len(hits)
        page = keyed[:limit]
        for rec, key in page:
            rec.cursor = _encode({"t": [rec.ts_ms, key]})
        more = len(keyed) > limit
        return SearchPage([r for r, _ in page], total, exact, page[-1][0].cursor if more and page else None, notes)

    # ---------------------------------------------------------------- traces

    def get_trace(self, trace_id: str, *, limit: int = 1000) -> TraceLines:
        """See :meth:`LogBackend.get_trace`: exact id only (also tried trimmed and lower-cased)."""
        m = self.mapping()
        size = min(max(limit + 1, TRACE_FETCH), COUNT_CAP)
        notes = [self._phrase_note("trace_id")] if "trace_id" in m.phrase_only else []
        tid, hits, fetched = trace_id, [], 0
        for candidate in trace_candidates(trace_id):
            resp = self._call("trace lookup", self.client.search, index=self.index,
                              body=q.trace_body(self.fields, m, candidate, size))
            raw = resp.get("hits", {}).get("hits", [])
            hits = [h for h in raw if str((h.get("_source") or {}).get(self.fields.trace_id)) == candidate]
            if hits:
                tid, fetched = candidate, len(raw)
                break
        if not hits:
            raise NotFound(f"No log lines with trace_id {trace_id!r}.", self._near_hint(trace_id, m))
        recs = sorted((self._record(h, False, None) for h in hits), key=lambda r: r.ts_ms)
        return trace_lines(tid, recs, limit, size, notes, fetched)

    def _near_hint(self, trace_id: str, m: q.Mapping) -> str:
        prefix = trace_id.strip()[:8]
        near: list[str] = []
        if len(prefix) == 8 and "trace_id" not in m.phrase_only:
            field = m.exact.get("trace_id", self.fields.trace_id)
            with contextlib.suppress(OpsError):
                resp = self._call("trace prefix lookup", self.client.search, index=self.index, body={
                    "size": 0, "query": {"prefix": {field: prefix}},
                    "aggs": {"ids": {"terms": {"field": field, "size": 5}}}})
                near = [str(b["key"]) for b in resp.get("aggregations", {}).get("ids", {}).get("buckets", [])]
        if near:
            return "traces with the same prefix: " + ", ".join(near)
        return "check the id; search_logs with a query finds trace ids in messages."

    def error_lines(self, trace_ids: Sequence[str], *, per_trace: int = 20) -> dict[str, list[dict[str, Any]]]:
        """See :meth:`LogBackend.error_lines`: one ``msearch`` with a query per trace."""
        ids = [t for t in dict.fromkeys(trace_ids) if t]
        if not ids:
            return {}
        m = self.mapping()
        size = per_trace + (PHRASE_SLACK if "trace_id" in m.phrase_only else 0)
        lines: list[dict[str, Any]] = []
        for tid in ids:
            lines += [{"index": self.index}, q.trace_body(self.fields, m, tid, size, errors_only=True)]
        resp = self._call("error lines lookup", self.client.msearch, body=lines)
        records = [self._record(h, False, None)
                   for tid, answer in zip(ids, resp.get("responses", []), strict=False) if "error" not in answer
                   for h in answer.get("hits", {}).get("hits", [])
                   if str((h.get("_source") or {}).get(self.fields.trace_id)) == tid]
        return errors_by_trace(records, per_trace)

    # ---------------------------------------------------------------- counts

    def stats(
        self, start: datetime, end: datetime, group_by: str = "level", interval_seconds: float = 300, *,
        service: str | None = None, level: str | Sequence[str] | None = None,
    ) -> Stats:
        """See :meth:`LogBackend.stats`: ``terms`` with a ``date_histogram`` each, in one request."""
        if group_by not in ("level", "service"):
            raise InvalidInput(f"Cannot group by {group_by!r}.", "use group_by='level' or group_by='service'.")
        interval_ms = round(interval_seconds * 1000)
        if interval_ms <= 0:
            raise InvalidInput(f"interval must be positive, got {interval_seconds!r} s.", "use e.g. '5m' or 300.")
        lo_ms, hi_ms = to_ms(start), to_ms(end)
        first_bucket = lo_ms // interval_ms * interval_ms
        nb = max(1, (hi_ms // interval_ms * interval_ms - first_bucket) // interval_ms + 1)
        m = self.mapping()
        body = q.stats_body(self.fields, m, group_by=group_by, interval_ms=interval_ms, start_ms=lo_ms, end_ms=hi_ms,
                            service=service, levels=levels_arg(level))
        resp = self._call("counting lines", self.client.search, index=self.index, body=body)
        series: dict[str, list[int]] = {}
        edges: dict[str, list[int]] = {}
        for g in resp.get("aggregations", {}).get("groups", {}).get("buckets", []):
            if "buckets" not in g:
                raise OpsError("OpenSearch returned group counts without the per-bucket date_histogram.",
                               "this engine (or fake) does not support date_histogram sub-aggregations.")
            key = normalize_level(g["key"]) if group_by == "level" else str(g["key"])
            vals = series.setdefault(key, [0] * nb)
            for b in g["buckets"]["buckets"]:
                i = (int(b["key"]) - first_bucket) // interval_ms
                if 0 <= i < nb:
                    vals[i] += int(b["doc_count"])
            lo_seen, hi_seen = g.get("first", {}).get("value"), g.get("last", {}).get("value")
            if lo_seen is not None and hi_seen is not None:
                prev = edges.get(key)
                lo_v, hi_v = max(lo_ms, int(lo_seen)), min(hi_ms, int(hi_seen))
                edges[key] = [min(prev[0], lo_v), max(prev[1], hi_v)] if prev else [lo_v, hi_v]
        groups = [StatsGroup(k, sum(v), v, *(edges.get(k) or (None, None))) for k, v in series.items() if any(v)]
        groups.sort(key=lambda g: (-g.total, g.key))
        return Stats(lo_ms, hi_ms, interval_ms, group_by, [first_bucket + i * interval_ms for i in range(nb)], groups,
                     sum(g.total for g in groups))

    def facets(self) -> tuple[dict[str, int], dict[str, int]]:
        """See :meth:`LogBackend.facets` (levels normalised and merged)."""
        try:
            resp = self._call("listing services and levels", self.client.search, index=self.index,
                              body=q.facets_body(self.fields, self.mapping()))
        except NotFound:
            return {}, {}
        aggs = resp.get("aggregations", {})
        services: dict[str, int] = {}
        levels: dict[str, int] = {}
        for b in aggs.get("service", {}).get("buckets", []):
            services[str(b["key"])] = services.get(str(b["key"]), 0) + int(b["doc_count"])
        for b in aggs.get("level", {}).get("buckets", []):
            lv = normalize_level(b["key"])
            levels[lv] = levels.get(lv, 0) + int(b["doc_count"])
        order = lambda d: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))  # noqa: E731
        return order(services), order(levels)

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """See :meth:`LogBackend.time_bounds` (two one-hit searches)."""
        out = []
        for newest in (False, True):
            try:
                resp = self._call("finding the time range", self.client.search, index=self.index,
                                  body=q.edge_body(self.fields, newest=newest))
            except NotFound:
                return None
            hits = resp.get("hits", {}).get("hits", [])
            if not hits:
                return None
            out.append(self._record(hits[0], False, None).ts_ms)
        return ms_to_datetime(out[0]), ms_to_datetime(out[1])

    # ---------------------------------------------------------------- doctor

    def check(self) -> list[Check]:
        """Reachable; the index pattern matches; the mapping is as expected; one query works."""
        checks: list[Check] = []
        try:
            info = self._call("ping", self.client.info)
            version = info.get("version", {}).get("number", "?")
            checks.append(Check("opensearch", True, f"reachable at {self.url}, version {version}"))
        except OpsError as exc:
            return [Check("opensearch", False, str(exc))]
        try:
            resp = self._call("reading the index mapping", self.client.indices.get_mapping, index=self.index)
        except OpsError as exc:
            resp = {}
            checks.append(Check("opensearch index", False, f"{exc}"))
        if not any((entry or {}).get("mappings") for entry in (resp or {}).values()):
            resp = {}  # no index, or indices without a single mapped field
        if resp:
            checks.append(Check("opensearch index", True, f"{self.index!r} matches {len(resp)} index(es): "
                                + ", ".join(sorted(resp)[:5]) + (" ..." if len(resp) > 5 else "")))
            self._mapping = m = q.resolve_mapping(self.fields, resp)
            if m.types.get("timestamp") not in ("date", "date_nanos"):
                checks.append(Check("opensearch mapping", False,
                                    f"{self.fields.timestamp} is {m.types.get('timestamp')}, not a date: time windows "
                                    "and counts need a date field (set OPSMCP_OPENSEARCH_FIELDS or fix the template)"))
            for name in sorted(m.phrase_only):
                checks.append(Check("opensearch mapping", True, self._phrase_note(name) + " (works, but slower and "
                                    "trace prefixes are not suggested)", warning=True))
            if not m.phrase_only:
                checks.append(Check("opensearch mapping", True, "exact fields: " + ", ".join(
                    f"{k}={v}" for k, v in sorted(m.exact.items()))))
        elif not any(not c.ok for c in checks):
            checks.append(Check("opensearch index", False, f"no index matching {self.index!r} maps any field: set "
                                "OPSMCP_OPENSEARCH_INDEX, or load logs with `opsmcp logs load --to opensearch FILE`"))
        try:
            bounds = self.time_bounds()
            detail = (f"newest line at {ms_iso(to_ms(bounds[1]))}, oldest at {ms_iso(to_ms(bounds[0]))}" if bounds
                      else "the query ran; no lines yet")
            checks.append(Check("opensearch query", True, detail))
        except OpsError as exc:
            checks.append(Check("opensearch query", False, str(exc)))
        return checks
