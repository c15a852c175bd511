"""Metrics toolset: CloudWatch metric queries with a summary an agent can read at a glance.

``query_metrics`` returns one series (bounded to a display budget) and a summary over
every point: min, max (and when), mean, p95, last, and the change between the first and
last fifth of the window, which is how an incident shows up. ``list_metrics`` lists what
exists. Unknown namespaces, metric names or dimension sets become :class:`NotFound`
errors that name the closest existing ones. All CloudWatch calls go through
:mod:`opsmcp.backends.cloudwatch`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.backends import cloudwatch
from opsmcp.backends.aws import AwsClients
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound, closest, not_found
from opsmcp.times import iso
from opsmcp.toolsets.base import Result, clamp, tool

DEFAULT_DISPLAY_POINTS = 120
MAX_DISPLAY_POINTS = 500
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
_DIAGNOSE_ITEMS = 2000  # series read to explain an empty answer


# --- models -------------------------------------------------------------------------------


class MetricPoint(BaseModel):
    """One datapoint."""

    time: str = Field(description="Start of the period, ISO-8601 UTC.")
    value: float = Field(description="The statistic over that period, in `unit`.")


class MetricSummary(BaseModel):
    """Statistics over every point of the window (not only the points shown)."""

    count: int = Field(description="Number of points summarised.")
    min: float
    max: float
    max_time: str = Field(description="When the maximum occurred (first time, ISO-8601 UTC).")
    mean: float
    p95: float = Field(description="95th percentile of the point values (linear interpolation).")
    last: float = Field(description="Value of the newest point.")
    last_time: str = Field(description="Time of the newest point, ISO-8601 UTC.")
    first_fifth_mean: float = Field(description="Mean of the oldest fifth of the points.")
    last_fifth_mean: float = Field(description="Mean of the newest fifth of the points.")
    change: float = Field(description="last_fifth_mean - first_fifth_mean, in `unit`.")
    change_pct: float | None = Field(description="change as a percentage of first_fifth_mean; null when that is 0.")


class MetricQueryResult(Result):
    """One metric series over a window, with its summary."""

    namespace: str
    metric_name: str
    dimensions: dict[str, str]
    stat: str = Field(description="Statistic per period (Average, Sum, Maximum, p95, ...).")
    period_seconds: int = Field(description="Period actually used, in seconds (may be wider than asked; see notes).")
    start: str = Field(description="Window start, ISO-8601 UTC (aligned to the period).")
    end: str = Field(description="Window end, ISO-8601 UTC.")
    unit: str | None = Field(description="CloudWatch unit of the values (Count, Seconds, Milliseconds, ...).")
    point_count: int = Field(description="Points in the window; `points` may show fewer (see truncated).")
    points: list[MetricPoint] = Field(description="Datapoints, oldest first.")
    summary: MetricSummary | None = Field(description="Statistics over all points; null when there are none.")


class MetricInfo(BaseModel):
    """One metric name and the dimension sets it has series for."""

    namespace: str
    metric_name: str
    dimensions: list[dict[str, str]] = Field(description="One entry per series; pass one as `dimensions`.")


class MetricListResult(Result):
    """Metrics that exist (data in the last two weeks)."""

    namespaces: list[str] = Field(description="Namespaces among the listed metrics.")
    series_count: int = Field(description="Series (metric + dimension set) listed.")
    metrics: list[MetricInfo]


# --- helpers ------------------------------------------------------------------------------


def parse_dimensions(value: dict[str, Any] | str | None) -> dict[str, str]:
    """Accept dimensions as a dict, ``"Name=Value,Name2=Value2"``, or JSON text.

    Also accepts CloudWatch's own shape (``{"Name": ..., "Value": ...}`` or a list of
    those). Empty input means no dimensions.

    Raises:
        InvalidInput: text that is none of these shapes.
    """
    example = "pass dimensions as {'QueueName': 'order-queue-dlq'} or the text 'QueueName=order-queue-dlq'."
    if value is None:
        return {}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            if not (isinstance(item, dict) and "Name" in item):
                raise InvalidInput(f"Cannot read dimensions {value!r}.", example)
            out[str(item["Name"])] = str(item.get("Value", ""))
        return out
    if isinstance(value, dict):
        if set(value) == {"Name", "Value"}:
            return {str(value["Name"]): str(value["Value"])}
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    text = str(value).strip()
    if not text or text.lower() in ("none", "null", "{}", "[]"):
        return {}
    if text[0] in "{[":
        try:
            return parse_dimensions(json.loads(text))
        except ValueError:
            raise InvalidInput(f"Cannot read dimensions {text!r} as JSON.", example) from None
    out = {}
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        sep = "=" if "=" in part else ":" if ":" in part else None
        if sep is None:
            raise InvalidInput(f"Cannot read dimension {part!r} in {text!r}: expected Name=Value.", example)
        name, _, val = part.partition(sep)
        if not name.strip():
            raise InvalidInput(f"Dimension {part!r} in {text!r} has no name.", example)
        out[name.strip()] = val.strip().strip("'\"")
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default; ``statistics.quantiles(method="inclusive")``)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _r(v: float) -> float:
    """Round for display: 4 decimals, or 4 significant digits for tiny values."""
    return round(v, 4) if abs(v) >= 0.01 or v == 0 else float(f"{v:.4g}")


def summarize(times: Sequence[datetime], values: Sequence[float]) -> MetricSummary:
    """Summary over all points; the fifths hold ``len // 5`` points (at least one)."""
    n = len(values)
    k = max(1, n // 5)
    first = sum(values[:k]) / k
    last = sum(values[-k:]) / k
    change = last - first
    top = max(values)
    return MetricSummary(
        count=n,
        min=_r(min(values)),
        max=_r(top),
        max_time=iso(times[values.index(top)]) or "",
        mean=_r(sum(values) / n),
        p95=_r(percentile(values, 95)),
        last=_r(values[-1]),
        last_time=iso(times[-1]) or "",
        first_fifth_mean=_r(first),
        last_fifth_mean=_r(last),
        change=_r(change),
        change_pct=round(change / abs(first) * 100, 1) if first else None,
    )


def _dims_text(dims: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(dims.items())) or "(no dimensions)"


def _check_dimensions(namespace: str, metric_name: str, dims: dict[str, str], sets: list[dict[str, str]]) -> None:
    """Raise NotFound listing the closest dimension sets when ``dims`` is not one of ``sets``."""
    if not sets or dims in sets:
        return
    texts = [_dims_text(d) for d in sets]
    near = closest(_dims_text(dims), texts) or texts[:5]
    more = f" (and {len(texts) - len(near)} more; see list_metrics)" if len(texts) > len(near) else ""
    which = f"with dimensions {_dims_text(dims)}" if dims else "without dimensions"
    raise NotFound(
        f"Metric {metric_name!r} in namespace {namespace!r} has no series {which}.",
        "it has series for " + "; ".join(repr(t) for t in near) + more + " — pass one as dimensions.",
    )


# --- toolset ------------------------------------------------------------------------------


#: How shown points combine the points they stand for, per statistic (else the mean).
_COMBINE = {
    "Sum": (sum, "sum"),
    "SampleCount": (sum, "sum"),
    "Maximum": (max, "maximum"),
    "Minimum": (min, "minimum"),
}


class MetricTools:
    """CloudWatch metric tools (read-only).

    Args:
        settings: ``max_result_bytes`` bounds how many points one answer may show.
        clients: the shared AWS clients.
    """

    def __init__(self, settings: Settings, clients: AwsClients) -> None:
        self.settings = settings
        self.clients = clients
        # ~70 bytes of JSON per point; leave room for the summary and notes.
        self.max_display = max(10, min(MAX_DISPLAY_POINTS, (settings.max_result_bytes - 3000) // 70))

    @tool(title="Query a CloudWatch metric", read_only=True, idempotent=True, open_world=True)
    async def query_metrics(
        self,
        namespace: Annotated[str, Field(description="CloudWatch namespace, e.g. 'AWS/SQS' or 'OpsMCP/Services'.")],
        metric_name: Annotated[str, Field(description="Metric name, e.g. 'ErrorCount' or 'ApproximateNumberOfMessagesVisible'.")],
        dimensions: Annotated[
            dict[str, str] | str | None,
            Field(description="Exact dimension set of the series: {'Service': 'order-processor'} or 'Service=order-processor'. Omit for none."),
        ] = None,
        stat: Annotated[
            str, Field(description="Statistic per period: Average, Sum, Minimum, Maximum, SampleCount, or a percentile like p95.")
        ] = "Average",
        period_seconds: Annotated[
            int, Field(description="Period length in seconds: 60 or a multiple of 60 (1, 5, 10, 30 for high-resolution metrics).")
        ] = 60,
        start: Annotated[str | None, Field(description="Window start: ISO-8601 or relative like '-6h'. Default '-3h'. Max span 14 days.")] = None,
        end: Annotated[str | None, Field(description="Window end: ISO-8601 or relative. Default now.")] = None,
        max_points: Annotated[int, Field(description="Most points to show (default 120); more are averaged down. The summary always uses all.")] = DEFAULT_DISPLAY_POINTS,
    ) -> MetricQueryResult:
        """Read one CloudWatch metric series over a time window, with a summary.

        The summary (min, max, mean, p95, last, and change between the first and last
        fifth of the window) covers every point; use it to see when and how much a metric
        moved. Windows over 14 days are clamped and more than 1440 points widen the period;
        both are labelled in notes. Unknown names fail with the closest existing ones.
        """
        notes: list[str] = []
        budget = clamp("max_points", max_points, 2, self.max_display, notes)
        dims = parse_dimensions(dimensions)
        series = await cloudwatch.get_metric_data(
            self.clients, namespace, metric_name, dims, stat, period_seconds, start, end
        )
        notes += series.notes
        if series.values and not dims:
            # CloudWatch matches a query without dimensions only to a series without
            # dimensions; moto sums every series instead. Ask, so both answer alike.
            known, _ = await cloudwatch.list_metrics(self.clients, namespace, metric_name, _DIAGNOSE_ITEMS)
            _check_dimensions(namespace, metric_name, dims, [m.dimensions for m in known])
        if not series.values:
            await self._explain_empty(namespace, metric_name, dims)
            notes.append("no datapoints in this window; the series exists — widen the window, e.g. start='-1d'")
        points = [MetricPoint(time=iso(t) or "", value=_r(v)) for t, v in zip(series.timestamps, series.values)]
        truncated = False
        if len(points) > budget:
            group = math.ceil(len(points) / budget)
            combine, how = _COMBINE.get(series.stat, (lambda c: sum(c) / len(c), "mean"))
            shown = []
            for i in range(0, len(points), group):
                chunk = series.values[i : i + group]
                shown.append(MetricPoint(time=points[i].time, value=_r(combine(chunk))))
            notes.append(
                f"showing {len(shown)} of {len(points)} points: each shown point is the {how} of {group} "
                f"consecutive {series.period_seconds}-s points (time = the first one); the summary uses all "
                f"{len(points)}. For every point, narrow the window (start/end) so it holds at most {budget} periods."
            )
            points, truncated = shown, True
        return MetricQueryResult(
            namespace=namespace,
            metric_name=metric_name,
            dimensions=dims,
            stat=series.stat,
            period_seconds=series.period_seconds,
            start=iso(series.start) or "",
            end=iso(series.end) or "",
            unit=series.unit,
            point_count=len(series.values),
            points=points,
            summary=summarize(series.timestamps, series.values) if series.values else None,
            truncated=truncated,
            notes=notes,
        )

    async def _explain_empty(self, namespace: str, metric_name: str | None, dims: dict[str, str] | None) -> None:
        """Raise NotFound naming the closest namespace, metric name or dimension set.

        Returns normally when the namespace (and ``metric_name``, and ``dims`` unless
        ``None``) exist: the emptiness is then about the time window.
        """
        known, _ = await cloudwatch.list_metrics(self.clients, namespace, None, _DIAGNOSE_ITEMS)
        if not known:
            everything, _ = await cloudwatch.list_metrics(self.clients, None, None, _DIAGNOSE_ITEMS)
            raise not_found("metric namespace", namespace, sorted({m.namespace for m in everything}), "list_metrics")
        names = sorted({m.metric_name for m in known})
        if metric_name is None:
            return
        if metric_name not in names:
            raise not_found(f"metric in namespace {namespace!r}", metric_name, names, "list_metrics")
        if dims is not None:
            _check_dimensions(namespace, metric_name, dims, [m.dimensions for m in known if m.metric_name == metric_name])

    @tool(title="List CloudWatch metrics", read_only=True, idempotent=True, open_world=True)
    async def list_metrics(
        self,
        namespace: Annotated[str | None, Field(description="Only this namespace, e.g. 'AWS/SQS'. Omit for all.")] = None,
        metric_name: Annotated[str | None, Field(description="Only this exact metric name. Omit for all.")] = None,
        limit: Annotated[int, Field(description="Most series (metric + dimension set) to list, 1-1000. Default 100.")] = DEFAULT_LIST_LIMIT,
    ) -> MetricListResult:
        """List CloudWatch metrics that have data in the last two weeks, grouped by name
        with their dimension sets. Use it to find the namespace, metric name and dimensions
        for query_metrics. Unknown filters fail with the closest existing names."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, MAX_LIST_LIMIT, notes)
        found, truncated = await cloudwatch.list_metrics(self.clients, namespace, metric_name, limit)
        if not found and namespace:
            await self._explain_empty(namespace, metric_name, None)
        elif not found and metric_name:
            everything, _ = await cloudwatch.list_metrics(self.clients, None, None, _DIAGNOSE_ITEMS)
            raise not_found("metric", metric_name, sorted({m.metric_name for m in everything}), "list_metrics")
        if not found:
            notes.append("no metrics with data in the last two weeks match")
        grouped: dict[tuple[str, str], MetricInfo] = {}
        for m in found:
            key = (m.namespace, m.metric_name)
            if key not in grouped:
                grouped[key] = MetricInfo(namespace=m.namespace, metric_name=m.metric_name, dimensions=[])
            grouped[key].dimensions.append(m.dimensions)
        if truncated:
            notes.append(f"listed the first {len(found)} series; pass namespace or metric_name to narrow, or a larger limit (max {MAX_LIST_LIMIT})")
        return MetricListResult(
            namespaces=sorted({m.namespace for m in found}),
            series_count=len(found),
            metrics=list(grouped.values()),
            truncated=truncated,
            notes=notes,
        )
