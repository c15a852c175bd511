"""Prometheus toolset: PromQL range and instant queries with bounded, summarised answers.

``query_promql`` returns each series with its labels, points downsampled to a display
budget by the series' own meaning (the newest value of a raw counter, the maximum of a
``max``/``max_over_time`` expression, else the mean), and the same summary as
``query_metrics`` (min / max / mean / p95 / last / change, slope per hour, anomalies,
optional threshold). Series are capped at :data:`MAX_SERIES` (the ones with the highest
peaks are kept) with a hint to aggregate. Range queries keep within Prometheus's
11,000-points-per-series limit by widening the step, labelled in ``notes``.
``promql_instant``, ``list_prometheus_metrics`` and ``label_values`` cover the rest. All
HTTP goes through :class:`~opsmcp.backends.prometheus.PrometheusBackend`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.analysis.series import MetricPoint, MetricSummary, downsample, rnd, summarize
from opsmcp.backends.prometheus import MAX_POINTS_PER_SERIES, PrometheusBackend
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, OpsError
from opsmcp.results import Result, clamp
from opsmcp.times import iso, parse_time, parse_window
from opsmcp.toolsets.base import tool

MAX_SERIES = 20  # series per query_promql answer
MAX_SAMPLES = 100  # samples per promql_instant answer
MAX_SPAN = timedelta(days=31)
DEFAULT_START = "-3h"
DEFAULT_STEP = 60
MAX_DISPLAY_POINTS = 120  # per series (as query_metrics shows by default)
DEFAULT_METRIC_LIMIT = 50
MAX_METRIC_LIMIT = 200
MAX_LABEL_VALUES = 1000
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OUTER_MAX = re.compile(r"^\s*(max|max_over_time|topk)\s*(\(|by\b|without\b)", re.I)
_OUTER_MIN = re.compile(r"^\s*(min|min_over_time|bottomk)\s*(\(|by\b|without\b)", re.I)
_COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
#: What a series name adds to its metric family's name. Prometheus keys /api/v1/metadata by
#: the family (``http_request_duration_seconds``, and for OpenMetrics targets ``requests``
#: for ``requests_total``), so a series without metadata of its own takes its family's.
_FAMILY_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total", "_info", "_gcount", "_gsum")

Query = Annotated[str, Field(description="PromQL expression, e.g. 'sum by (queue) (sqs_dlq_depth)'.", max_length=4000)]


class PromSeries(BaseModel):
    """One series of a range query."""

    labels: dict[str, str] = Field(description="The series' labels (`__name__` is the metric name when kept).")
    point_count: int = Field(description="Points Prometheus returned for this series; `points` may show fewer.")
    points: list[MetricPoint] = Field(description="Points, oldest first, downsampled when `downsampled` says so.")
    downsampled: str | None = Field(
        description="How shown points combine the returned ones, e.g. 'mean of 6'; null if not."
    )
    summary: MetricSummary | None = Field(description="Statistics over every returned point; null when none.")


class PromQueryResult(Result):
    """A PromQL range query: each series with labels, bounded points and a summary."""

    query: str = Field(description="The PromQL expression.")
    start: str = Field(description="Window start, ISO-8601 UTC (aligned down to the step).")
    end: str = Field(description="Window end, ISO-8601 UTC.")
    step_seconds: int = Field(description="Evaluation step used, seconds (may be wider than asked; see notes).")
    series_count: int = Field(description="Series Prometheus returned (before the cap).")
    series_cut: int = Field(description="Series left out by the cap (the ones with the lowest peaks).")
    series: list[PromSeries] = Field(description="Series, highest peak first.")


class PromSample(BaseModel):
    """One sample of an instant query."""

    labels: dict[str, str] = Field(description="The series' labels; empty for a scalar.")
    value: float | None = Field(description="The value; null for a string result or NaN.")
    text: str | None = Field(None, description="The raw value when it is not a finite number (string, NaN, +Inf).")
    time: str = Field(description="Evaluation time (the newest sample's time for a range vector), ISO-8601 UTC.")


class PromInstantResult(Result):
    """A PromQL instant query."""

    query: str = Field(description="The PromQL expression.")
    time: str = Field(description="Evaluation time, ISO-8601 UTC.")
    result_type: str = Field(description="vector, scalar, string or matrix (a range vector selector).")
    sample_count: int = Field(description="Samples Prometheus returned (before the cap).")
    samples: list[PromSample] = Field(description="Samples, highest value first (at most 100).")


class PromMetricInfo(BaseModel):
    """One metric name with its metadata and label names."""

    name: str = Field(description="Metric name.")
    type: str | None = Field(description="counter, gauge, histogram, summary, untyped; null without metadata.")
    help: str | None = Field(description="The metric's HELP text; null without metadata.")
    labels: list[str] = Field(description="Label names its series carry (besides __name__).")


class PromMetricListResult(Result):
    """Metric names known to Prometheus."""

    total: int = Field(description="Metric names matching (before the limit).")
    metrics: list[PromMetricInfo] = Field(description="Metrics, sorted by name.")


class LabelValuesResult(Result):
    """Values of one label."""

    label: str = Field(description="The label name.")
    total: int = Field(description="Distinct values (before the limit).")
    values: list[str] = Field(description="Values, sorted.")


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _combine_for(query: str, labels: dict[str, str], types: dict[str, str]) -> str:
    """How to downsample a series of ``query``: ``last`` for a raw counter, ``maximum`` /
    ``minimum`` for a max/min expression, else ``mean``."""
    if _OUTER_MAX.match(query):
        return "maximum"
    if _OUTER_MIN.match(query):
        return "minimum"
    name = labels.get("__name__")
    if name and (types.get(name) in ("counter", "histogram", "summary") or name.endswith(_COUNTER_SUFFIXES)):
        return "last"
    return "mean"


def _aggregate_hint(query: str, labels: list[dict[str, str]]) -> str:
    """A next step for too many series: aggregate away the labels that vary."""
    varying: dict[str, set[str]] = {}
    for lab in labels:
        for k, v in lab.items():
            varying.setdefault(k, set()).add(v)
    names = sorted((k for k, vals in varying.items() if len(vals) > 1 and k != "__name__"),
                   key=lambda k: len(varying[k]))
    if names:
        return (f"aggregate, e.g. 'sum by ({names[0]}) ({query})' (labels that vary: {', '.join(names[:6])}), "
                f"or keep the largest with 'topk({MAX_SERIES}, {query})'")
    return f"aggregate with sum/avg, or keep the largest with 'topk({MAX_SERIES}, {query})'"


class PrometheusTools:
    """PromQL tools (read-only).

    Args:
        settings: ``max_result_bytes`` bounds how many points one answer may show.
        backend: the Prometheus adapter (built once by ``server.build_toolsets``).
    """

    #: Seconds a metric's type from /api/v1/metadata is reused (saves a round trip per query).
    TYPES_TTL = 300.0

    def __init__(self, settings: Settings, backend: PrometheusBackend) -> None:
        self.settings = settings
        self.backend = backend
        self._type_cache: dict[str, tuple[float, str]] = {}

    def _points_per_series(self, n_series: int, label_bytes: int) -> int:
        """Display points per series so the answer stays inside the result budget."""
        room = self.settings.max_result_bytes - 3000 - label_bytes - n_series * 1300
        return max(10, min(MAX_DISPLAY_POINTS, room // (max(1, n_series) * 60)))

    async def _types(self, names: set[str]) -> dict[str, str]:
        """Metric types from /api/v1/metadata for up to 20 names ("" when it has none),
        cached for :attr:`TYPES_TTL` seconds."""
        now = time.monotonic()
        found = {n: t for n, (at, t) in self._type_cache.items() if n in names and now - at < self.TYPES_TTL}

        async def one(name: str) -> None:
            try:
                meta = await self._metadata(name)
            except OpsError:  # metadata is a refinement; the suffix rule still applies
                return
            found[name] = meta.get("type", "")
            self._type_cache[name] = (now, found[name])

        await asyncio.gather(*(one(n) for n in sorted(names - set(found))[:MAX_SERIES]))
        if len(self._type_cache) > 10_000:  # bounded: forget everything stale
            self._type_cache = {n: v for n, v in self._type_cache.items() if now - v[0] < self.TYPES_TTL}
        return found

    async def _metadata(self, name: str) -> dict[str, str]:
        """The metadata (``type``, ``help``, ``unit``) of series ``name``, else of its metric
        family (``name`` less a :data:`_FAMILY_SUFFIXES` suffix); ``{}`` when neither has any.

        Raises:
            OpsError: Prometheus could not be asked (as :meth:`PrometheusBackend.get`).
        """
        meta = await self.backend.metadata(name)
        if meta.get(name):
            return meta[name][0]
        family = next((name.removesuffix(s) for s in _FAMILY_SUFFIXES if name.endswith(s) and len(name) > len(s)), "")
        if family:
            meta = await self.backend.metadata(family)
            if meta.get(family):
                return meta[family][0]
        return {}

    @tool(title="Query Prometheus (range)", read_only=True, idempotent=True, open_world=True)
    async def query_promql(
        self,
        query: Query,
        start: Annotated[
            str | None,
            Field(description="Window start: ISO-8601 or relative like '-6h'. Default '-3h'.", max_length=64),
        ] = None,
        end: Annotated[
            str | None, Field(description="Window end: ISO-8601 or relative. Default now.", max_length=64)
        ] = None,
        step_seconds: Annotated[
            int | None,
            Field(description="Evaluation step in seconds (default 60); widened to keep <= 11,000 points per series.",
                  ge=1, le=86_400),
        ] = None,
        threshold: Annotated[
            float | None,
            Field(description="Optional level: each summary says when the series reaches it at its current slope."),
        ] = None,
    ) -> PromQueryResult:
        """Run a PromQL range query; each series with labels, bounded points and a summary
        (min, max, mean, p95, last, change, slope per hour, anomalous points; with
        ``threshold``, when it is reached). At most 20 series (highest peaks kept; the
        notes say how to aggregate). Parse errors quote Prometheus (with line:column).
        """
        notes: list[str] = []
        query = query.strip()
        if threshold is not None and not math.isfinite(threshold):
            raise InvalidInput(f"threshold={threshold} is not a finite number.", "pass a level such as 1000.")
        if not query:
            raise InvalidInput("query is empty.",
                               "pass a PromQL expression, e.g. 'up'; list_prometheus_metrics shows names.")
        t0, t1, window_notes = parse_window(start, end, default_start=DEFAULT_START, max_span=MAX_SPAN)
        notes += window_notes
        span = (t1 - t0).total_seconds()
        if span <= 0:
            raise InvalidInput(f"The time range is empty: start and end are both {iso(t0)}.",
                               "give a start before end, e.g. start='-1h'.")
        step = int(step_seconds or DEFAULT_STEP)
        if span / step > MAX_POINTS_PER_SERIES:
            wider = math.ceil(span / MAX_POINTS_PER_SERIES)
            notes.append(f"step widened from {step} s to {wider} s: Prometheus returns at most "
                         f"{MAX_POINTS_PER_SERIES} points per series")
            step = wider
        epoch = int(t0.timestamp())
        t0 = datetime.fromtimestamp(epoch - epoch % step, tz=UTC)
        data = await self.backend.query_range(query, t0, t1, step)
        raw = data.get("result") or []
        parsed: list[tuple[dict[str, str], list[float], list[float]]] = []
        skipped = 0
        for item in raw:
            pairs = item.get("values") or []
            times = [float(ts) for ts, _ in pairs]  # Unix seconds: a datetime per point costs too much
            try:
                values = [float(v) for _, v in pairs]
            except (TypeError, ValueError):
                values = [_float(v) for _, v in pairs]
            if not all(map(math.isfinite, values)):
                keep = [i for i, v in enumerate(values) if math.isfinite(v)]
                skipped += len(values) - len(keep)
                times, values = [times[i] for i in keep], [values[i] for i in keep]
            parsed.append(({str(k): str(v) for k, v in (item.get("metric") or {}).items()}, times, values))
        if skipped:
            notes.append(f"{skipped} NaN/Inf points left out of the points and summaries")
        total = len(parsed)
        parsed.sort(key=lambda s: max(s[2]) if s[2] else -math.inf, reverse=True)
        cut = max(0, total - MAX_SERIES)
        if cut:
            notes.append(f"showing {MAX_SERIES} of {total} series (highest peaks); "
                         f"{_aggregate_hint(query, [p[0] for p in parsed])}")
            parsed = parsed[:MAX_SERIES]
        if not parsed:
            notes.append("no series in this window: check the metric and label names (list_prometheus_metrics, "
                         "label_values) or widen the window")
        types = await self._types({lab["__name__"] for lab, _, _ in parsed if "__name__" in lab})
        budget = self._points_per_series(len(parsed), sum(len(str(lab)) for lab, _, _ in parsed))
        out: list[PromSeries] = []
        downsampled = False
        for labels, times, values in parsed:
            how = _combine_for(query, labels, types)
            points, group = downsample(times, values, budget, how)
            downsampled |= group > 1
            out.append(PromSeries(
                labels=labels,
                point_count=len(values),
                points=points,
                downsampled=f"{how} of {group}" if group > 1 else None,
                summary=summarize(times, values, threshold) if values else None,
            ))
        if downsampled:
            notes.append(f"points downsampled to at most {budget} per series (see each series' `downsampled`; "
                         "time = the first point of each group); summaries use every point. For every point, "
                         "narrow the window or raise step_seconds")
        return PromQueryResult(
            query=query, start=iso(t0) or "", end=iso(t1) or "", step_seconds=step, series_count=total,
            series_cut=cut, series=out, truncated=bool(cut) or downsampled, notes=notes,
        )

    @tool(title="Query Prometheus (instant)", read_only=True, idempotent=True, open_world=True)
    async def promql_instant(
        self,
        query: Query,
        time: Annotated[
            str | None,
            Field(description="Evaluation time: ISO-8601 or relative like '-1h'. Default now.", max_length=64),
        ] = None,
    ) -> PromInstantResult:
        """Evaluate PromQL at one instant: a vector (one sample per series), a scalar or a
        string. At most 100 samples, highest value first. Parse errors quote Prometheus."""
        notes: list[str] = []
        query = query.strip()
        if not query:
            raise InvalidInput("query is empty.", "pass a PromQL expression, e.g. 'up'.")
        at = parse_time(time, name="time") if time else None
        data = await self.backend.query(query, at)
        kind = str(data.get("resultType", ""))
        result = data.get("result")
        samples: list[PromSample] = []

        def sample(labels: dict[str, Any], pair: list[Any]) -> PromSample:
            v = _float(pair[1])
            return PromSample(
                labels={str(k): str(x) for k, x in labels.items()},
                value=rnd(v) if math.isfinite(v) else None,
                text=None if math.isfinite(v) else str(pair[1]),
                time=iso(datetime.fromtimestamp(float(pair[0]), tz=UTC)) or "",
            )

        if kind in ("scalar", "string"):
            samples.append(sample({}, list(result or [0, ""])))
        elif kind == "vector":
            samples = [sample(item.get("metric") or {}, item.get("value") or [0, "NaN"]) for item in result or []]
        elif kind == "matrix":
            notes.append("a range vector: each sample is the newest value of its series; use query_promql for the "
                         "series over time")
            samples = [sample(item.get("metric") or {}, item["values"][-1])
                       for item in result or [] if item.get("values")]
        total = len(samples)
        samples.sort(key=lambda s: s.value if s.value is not None else -math.inf, reverse=True)
        if total > MAX_SAMPLES:
            notes.append(f"showing {MAX_SAMPLES} of {total} samples (highest first); "
                         f"{_aggregate_hint(query, [s.labels for s in samples])}")
            samples = samples[:MAX_SAMPLES]
        when = at or datetime.now(UTC)
        return PromInstantResult(query=query, time=iso(when) or "", result_type=kind, sample_count=total,
                                 samples=samples, truncated=total > MAX_SAMPLES, notes=notes)

    @tool(title="List Prometheus metrics", read_only=True, idempotent=True, open_world=True)
    async def list_prometheus_metrics(
        self,
        match: Annotated[
            str | None,
            Field(description="A substring of the name ('dlq') or a series selector "
                              "('{job=\"opsmcp\"}'); omit for all.", max_length=1000),
        ] = None,
        limit: Annotated[int, Field(description="Most metrics to list, 1-200. Default 50.")] = DEFAULT_METRIC_LIMIT,
    ) -> PromMetricListResult:
        """List metric names with their type and help (from /api/v1/metadata) and label
        names. Use it to find what to put in a PromQL query."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, MAX_METRIC_LIMIT, notes)
        text = (match or "").strip()
        if text and ("{" in text or "=" in text):
            names = await self.backend.label_values("__name__", text)
        else:
            names = await self.backend.label_values("__name__")
            if text:
                names = [n for n in names if text.lower() in n.lower()]
        names = sorted(names)
        total = len(names)
        page = names[:limit]
        sem = asyncio.Semaphore(8)

        async def info(name: str) -> PromMetricInfo:
            async with sem:
                first, labels = await asyncio.gather(self._metadata(name), self.backend.label_names(name))
            return PromMetricInfo(name=name, type=first.get("type") or None, help=first.get("help") or None,
                                  labels=[lab for lab in labels if lab != "__name__"])

        metrics = list(await asyncio.gather(*(info(n) for n in page)))
        if total > limit:
            notes.append(f"listed {limit} of {total} names; pass match to narrow "
                         f"or a larger limit (max {MAX_METRIC_LIMIT})")
        if not total:
            notes.append("no metric names match" + (f" {text!r}" if text else ""))
        return PromMetricListResult(total=total, metrics=metrics, truncated=total > limit, notes=notes)

    @tool(title="List a Prometheus label's values", read_only=True, idempotent=True, open_world=True)
    async def label_values(
        self,
        label: Annotated[str, Field(description="Label name, e.g. 'queue', 'job' or '__name__'.", max_length=200)],
        match: Annotated[
            str | None,
            Field(description="Only series matching this selector, e.g. 'sqs_dlq_depth' or '{job=\"opsmcp\"}'.",
                  max_length=1000),
        ] = None,
        limit: Annotated[int, Field(description="Most values to return, 1-1000. Default 200.")] = 200,
    ) -> LabelValuesResult:
        """The distinct values of one label (optionally among the series a selector matches)."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, MAX_LABEL_VALUES, notes)
        name = label.strip()
        if not _LABEL_NAME.match(name):
            raise InvalidInput(f"{label!r} is not a Prometheus label name.",
                               "label names match [a-zA-Z_][a-zA-Z0-9_]*, e.g. 'queue'.")
        values = sorted(await self.backend.label_values(name, (match or "").strip() or None))
        total = len(values)
        if total > limit:
            notes.append(f"listed {limit} of {total} values; pass match to narrow or a larger limit")
        if not total:
            notes.append(f"label {name!r} has no values" + (f" among series matching {match!r}" if match else "")
                         + "; list_prometheus_metrics shows label names")
        return LabelValuesResult(label=name, total=total, values=values[:limit], truncated=total > limit, notes=notes)
