"""Metrics toolset: CloudWatch metric queries with a summary an agent can read at a glance.

``query_metrics`` returns one series (bounded to a display budget) and a summary over
every point: min, max (and when), mean, p95, last, and the change between the first and
last fifth of the window, which is how an incident shows up. ``list_metrics`` lists what
exists. Unknown namespaces, metric names or dimension sets become :class:`NotFound`
errors that name the closest existing ones. All CloudWatch calls go through the
:class:`~opsmcp.backends.cloudwatch.CloudWatchBackend` that ``build_toolsets`` passes in;
the summary, trend and anomaly arithmetic lives in :mod:`opsmcp.analysis.series`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.analysis.series import MetricPoint, MetricSummary, downsample, summarize
from opsmcp.backends.cloudwatch import CloudWatchBackend
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound, closest, not_found
from opsmcp.result_size import room_for
from opsmcp.results import Result, clamp
from opsmcp.times import iso
from opsmcp.toolsets.base import tool

DEFAULT_DISPLAY_POINTS = 120
MAX_DISPLAY_POINTS = 500
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
_DIAGNOSE_ITEMS = 2000  # series read to explain an empty answer


# --- models -------------------------------------------------------------------------------


class MetricQueryResult(Result):
    """One metric series over a window, with its summary."""

    namespace: str = Field(description="CloudWatch namespace queried.")
    metric_name: str = Field(description="Metric name queried.")
    dimensions: dict[str, str] = Field(description="Dimension set of the series.")
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

    namespace: str = Field(description="CloudWatch namespace.")
    metric_name: str = Field(description="Metric name.")
    dimensions: list[dict[str, str]] = Field(description="One entry per series; pass one as `dimensions`.")


class MetricListResult(Result):
    """Metrics that exist (data in the last two weeks)."""

    namespaces: list[str] = Field(description="Namespaces among the listed metrics.")
    series_count: int = Field(description="Series (metric + dimension set) listed.")
    metrics: list[MetricInfo] = Field(description="Metric names with their dimension sets.")


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
_COMBINE = {"Sum": "sum", "SampleCount": "sum", "Maximum": "maximum", "Minimum": "minimum"}


def _required(name: str, value: str, example: str) -> str:
    """``value`` stripped; an empty one is refused (botocore would answer with raw
    ParamValidationError text)."""
    text = value.strip()
    if not text:
        raise InvalidInput(f"{name} is empty.", f"pass a {name}, e.g. {example!r}; list_metrics shows what exists.")
    return text


class MetricTools:
    """CloudWatch metric tools (read-only).

    Args:
        settings: ``max_result_bytes`` bounds how many points one answer may show.
        backend: the CloudWatch adapter (built once by ``server.build_toolsets``).
    """

    def __init__(self, settings: Settings, backend: CloudWatchBackend) -> None:
        self.settings = settings
        self.backend = backend
        # ~70 bytes of JSON per point; room for the summary and notes.
        self.max_display = room_for(settings.max_result_bytes, 70, high=MAX_DISPLAY_POINTS)

    @tool(title="Query a CloudWatch metric", read_only=True, idempotent=True, open_world=True)
    async def query_metrics(
        self,
        namespace: Annotated[
            str, Field(description="e.g. 'AWS/SQS' or 'OpsMCP/Services'.", max_length=255)
        ],
        metric_name: Annotated[
            str,
            Field(
                description="e.g. 'ErrorCount' or 'ApproximateNumberOfMessagesVisible'.", max_length=255
            ),
        ],
        dimensions: Annotated[
            dict[str, str] | str | None,
            Field(
                description="Exact dimension set: {'Service': 'order-processor'} or 'Service=order-processor'; "
                "omit for none."
            ),
        ] = None,
        stat: Annotated[
            str,
            Field(
                description="Per period: Average, Sum, Minimum, Maximum, SampleCount or a percentile (p95).",
                max_length=32,
            ),
        ] = "Average",
        period_seconds: Annotated[
            int,
            Field(
                description="Seconds: 60 or a multiple of 60 (1, 5, 10, 30 for high-resolution metrics)."
            ),
        ] = 60,
        start: Annotated[
            str | None,
            Field(
                description="ISO-8601 or relative ('-6h'); default '-3h'; span at most 14 days.",
                max_length=64,
            ),
        ] = None,
        end: Annotated[
            str | None, Field(description="Same forms as start; default: now.", max_length=64)
        ] = None,
        max_points: Annotated[
            int,
            Field(
                description="Most points shown; more are averaged down (the summary uses all)."
            ),
        ] = DEFAULT_DISPLAY_POINTS,
        threshold: Annotated[
            float | None,
            Field(
                description="A level (e.g. a DLQ depth alarm): the summary says when the series reaches it."
            ),
        ] = None,
    ) -> MetricQueryResult:
        """One CloudWatch metric series over a window, with a summary of every point (min,
        max, mean, p95, last, change, slope per hour, anomalies; with `threshold`, when it is
        reached). Windows over 14 days are clamped; over 1,440 points widen the period.
        Unknown names fail naming the closest ones."""
        notes: list[str] = []
        budget = clamp("max_points", max_points, 2, self.max_display, notes)
        if threshold is not None and not math.isfinite(threshold):
            raise InvalidInput(f"threshold={threshold} is not a finite number.", "pass a level such as 1000.")
        namespace = _required("namespace", namespace, "AWS/SQS")
        metric_name = _required("metric_name", metric_name, "ApproximateNumberOfMessagesVisible")
        dims = parse_dimensions(dimensions)
        series = await self.backend.get_metric_data(namespace, metric_name, dims, stat, period_seconds, start, end)
        notes += series.notes
        if series.values and not dims:
            # CloudWatch matches a query without dimensions only to a series without
            # dimensions; moto sums every series instead. Ask, so both answer alike.
            known, _ = await self.backend.list_metrics(namespace, metric_name, _DIAGNOSE_ITEMS)
            _check_dimensions(namespace, metric_name, dims, [m.dimensions for m in known])
        if not series.values:
            await self._explain_empty(namespace, metric_name, dims)
            notes.append("no datapoints in this window; the series exists — widen the window, e.g. start='-1d'")
        how = _COMBINE.get(series.stat, "mean")
        points, group = downsample(series.timestamps, series.values, budget, how)
        truncated = group > 1
        if truncated:
            n = len(series.values)
            notes.append(
                f"showing {len(points)} of {n} points: each shown point is the {how} of {group} "
                f"consecutive {series.period_seconds}-s points (time = the first one); the summary uses all "
                f"{n}. For every point, narrow the window (start/end) so it holds at most {budget} periods."
            )
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
            summary=summarize(series.timestamps, series.values, threshold) if series.values else None,
            truncated=truncated,
            notes=notes,
        )

    async def _explain_empty(self, namespace: str, metric_name: str | None, dims: dict[str, str] | None) -> None:
        """Raise NotFound naming the closest namespace, metric name or dimension set.

        Returns normally when the namespace (and ``metric_name``, and ``dims`` unless
        ``None``) exist: the emptiness is then about the time window.
        """
        known, _ = await self.backend.list_metrics(namespace, None, _DIAGNOSE_ITEMS)
        if not known:
            everything, _ = await self.backend.list_metrics(None, None, _DIAGNOSE_ITEMS)
            raise not_found("metric namespace", namespace, sorted({m.namespace for m in everything}), "list_metrics")
        names = sorted({m.metric_name for m in known})
        if metric_name is None:
            return
        if metric_name not in names:
            raise not_found(f"metric in namespace {namespace!r}", metric_name, names, "list_metrics")
        if dims is not None:
            _check_dimensions(
                namespace, metric_name, dims, [m.dimensions for m in known if m.metric_name == metric_name]
            )

    @tool(title="List CloudWatch metrics", read_only=True, idempotent=True, open_world=True)
    async def list_metrics(
        self,
        namespace: Annotated[
            str | None, Field(description="Only this namespace, e.g. 'AWS/SQS'.", max_length=255)
        ] = None,
        metric_name: Annotated[
            str | None, Field(description="Only this exact metric name.", max_length=255)
        ] = None,
        limit: Annotated[
            int, Field(description="Most series, 1-1000.")
        ] = DEFAULT_LIST_LIMIT,
    ) -> MetricListResult:
        """CloudWatch metrics with data in the last two weeks, by name with their dimension
        sets: the namespace, name and dimensions for query_metrics."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, MAX_LIST_LIMIT, notes)
        namespace = (namespace or "").strip() or None  # an empty filter means no filter
        metric_name = (metric_name or "").strip() or None
        found, truncated = await self.backend.list_metrics(namespace, metric_name, limit)
        if not found and namespace:
            await self._explain_empty(namespace, metric_name, None)
        elif not found and metric_name:
            everything, _ = await self.backend.list_metrics(None, None, _DIAGNOSE_ITEMS)
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
            notes.append(
                f"listed the first {len(found)} series; pass namespace or metric_name to narrow, "
                f"or a larger limit (max {MAX_LIST_LIMIT})"
            )
        return MetricListResult(
            namespaces=sorted({m.namespace for m in found}),
            series_count=len(found),
            metrics=list(grouped.values()),
            truncated=truncated,
            notes=notes,
        )
