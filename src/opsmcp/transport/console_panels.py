"""What the console's panels read when the page opens: failure groups of every DLQ, the
last hour of queue depths, the key metric charts, the writes history and the alerts.
Read-only and bounded; :mod:`opsmcp.transport.console_api` serves them as JSON.

Everything comes from what the server built for the upper layers
(:class:`~opsmcp.calls.runtime.Runtime`), never from a toolset:

- **failure groups**: every DLQ through ``runtime.queues``
  (:meth:`~opsmcp.analysis.queue_state.QueueStates.read_dlq`), the same shared read and
  signatures ``analyze_dlq`` gives an agent, so the console never hides messages from an
  agent's read: it shares it. At most ``OPSMCP_CONSOLE_DLQ_READ`` messages per DLQ, at most
  :data:`MAX_DLQS` DLQs, deepest first; a read is reused while the DLQ's counts stay the
  same (:data:`~opsmcp.analysis.dlq_read.SHARE_SECONDS`), by the console and agents alike.
- **depths**: the depth poller's ring (:class:`~opsmcp.calls.depth_history.DepthHistory`:
  the last hour, sampled while someone listens to ``/events``); before its first sample,
  CloudWatch's ``AWS/SQS ApproximateNumberOfMessagesVisible`` (``runtime.metrics``).
- **metrics**: ``OPSMCP_CONSOLE_METRICS`` charts read through ``runtime.metrics`` (the
  CloudWatch backend): the last hour at 60-second periods, at most :data:`MAX_LINES` lines
  per chart, reused for ``OPSMCP_CONSOLE_CACHE_SECONDS``.
- **writes**: the audit sink's ``tail`` (the last :data:`AUDIT_RECORDS` records), folded to
  one row per write (``call_id``): who, what, when, outcome, counts, approver.
- **alerts**: the alert store (``runtime.alerts``), firing first, newest start first, as
  ``list_alerts`` orders and summarises them (:func:`~opsmcp.backends.alertstore.newest_firing_first`,
  :func:`~opsmcp.backends.alertstore.brief`).

Every answer says what it left out (``truncated``, ``omitted``, ``notes``). Text that came
from outside (alert summaries, failure signatures, error messages, write arguments) is
data: the page shows it with ``textContent`` only, and the answer names those fields in
``untrusted``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from opsmcp.backends.alertstore import brief, newest_firing_first
from opsmcp.errors import OpsError

if TYPE_CHECKING:
    from opsmcp.analysis.dlq_read import DlqRead
    from opsmcp.backends.cloudwatch import CloudWatchBackend
    from opsmcp.calls.audit import AuditSink
    from opsmcp.calls.runtime import Runtime

log = logging.getLogger("opsmcp.transport.console_panels")

T = TypeVar("T")

#: Most DLQs whose failure groups one answer holds (deepest first).
MAX_DLQS = 20
#: DLQs read at once.
DLQ_CONCURRENCY = 4
#: Order ids shown per failure group.
ORDER_IDS_SHOWN = 5
#: Lines per metric chart (values of ``split_by``).
MAX_LINES = 6
#: Audit records read for the writes history.
AUDIT_RECORDS = 2000
#: Most writes one answer holds.
MAX_WRITES = 200
#: How long one read of the audit log answers every page that asks (they all reload on a write event) while
#: no newer ``write`` event arrived, s.
WRITES_REUSE_SECONDS = 1.0
#: Most alerts one answer holds.
MAX_ALERTS = 200
#: Points of each line a ``metrics`` event carries (the page merges them by time).
EVENT_POINTS = 5


@dataclass
class Shared(Generic[T]):
    """One read per key at a time, its answer reused for ``ttl`` seconds.

    Callers that ask while a read runs wait for it instead of starting another; a failed
    read is not kept. At most ``max_keys`` answers are kept (the oldest goes first).
    """

    ttl: float
    max_keys: int = 64
    clock: Callable[[], float] = time.monotonic
    _kept: dict[str, tuple[float, T]] = field(default_factory=dict)
    _running: dict[str, asyncio.Future[T]] = field(default_factory=dict)

    async def get(self, key: str, read: Callable[[], Awaitable[T]],
                  still_good: Callable[[T], bool] = lambda _: True) -> T:
        """The kept answer of ``key`` when younger than ``ttl`` and ``still_good``, else
        the answer of the read in progress, else a new ``read()``.

        Raises:
            whatever ``read`` raised (to every caller that waited for it).
        """
        kept = self._kept.get(key)
        if kept is not None and self.clock() - kept[0] < self.ttl and still_good(kept[1]):
            return kept[1]
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await read()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(value)
            self._kept.pop(key, None)
            self._kept[key] = (self.clock(), value)
            while len(self._kept) > self.max_keys:
                self._kept.pop(next(iter(self._kept)))
            return value
        finally:
            self._running.pop(key, None)

    def forget(self) -> None:
        """Drop every kept answer."""
        self._kept.clear()


@dataclass
class Panels:
    """The panel readers of one server (one per :class:`~opsmcp.calls.runtime.Runtime`).

    Args:
        runtime: the server's runtime (``settings``, ``queues``, ``metrics``, ``alerts``,
            ``poller``, ``audit``, ``events``).
    """

    runtime: Runtime
    depths_cache: Shared[dict[str, Any]] = field(init=False)
    metrics_cache: Shared[dict[str, Any]] = field(init=False)
    writes_cache: Shared[tuple[list[dict[str, Any]], int, int]] = field(init=False)
    _feed: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        ttl = self.runtime.settings.console_cache_seconds
        self.depths_cache = Shared(ttl, max_keys=1)
        self.metrics_cache = Shared(ttl, max_keys=1)
        self.writes_cache = Shared(WRITES_REUSE_SECONDS, max_keys=1)  # pages reloading on one write event

    async def _dlq_depths(self, notes: list[str] | None = None) -> dict[str, int]:
        """DLQ name -> depth (visible + in flight): as of the poller's last poll while it runs,
        else from one page of up to 1,000 queues (``notes`` says when more exist)."""
        poller = self.runtime.poller
        if poller is not None and poller.running and poller.state:
            return {name: s["visible"] + s["in_flight"] for name, s in poller.state.items() if s.get("is_dlq")}
        states = self.runtime.queues
        if states is None:
            return {}
        page = await states.page(None, 1000, None)
        if (page.next_cursor or page.unread) and notes is not None:
            notes.append("more queues exist than one page lists (1000)")
        return {q.name: q.visible + q.in_flight for q in page.queues if q.is_dlq}

    # ------------------------------------------------------------- failure groups -----
    async def failure_groups(self) -> dict[str, Any]:
        """Failure groups of every DLQ (see the module doc).

        Returns ``{"available", "reason", "dlqs": [{"queue", "depth", "messages_read",
        "approximate_total", "truncated", "notes", "error", "groups": [{"signature", "basis",
        "service", "error_message", "count", "first_sent", "last_sent", "order_ids"}]}],
        "omitted" (DLQs not read: over MAX_DLQS), "read_at", "untrusted"}``.
        """
        if self.runtime.queues is None:
            return {"available": False, "reason": "the queues toolset is off (OPSMCP_TOOLSETS)", "dlqs": []}
        notes: list[str] = []
        depths = await self._dlq_depths(notes)
        dlqs = sorted(depths, key=lambda name: (-depths[name], name))
        shown, omitted = dlqs[:MAX_DLQS], max(0, len(dlqs) - MAX_DLQS)
        limiter = anyio.CapacityLimiter(DLQ_CONCURRENCY)
        out: dict[str, dict[str, Any]] = {}

        async def one(name: str) -> None:
            async with limiter:
                out[name] = await self._dlq_groups(name, depths[name])

        async with anyio.create_task_group() as tg:
            for name in shown:
                tg.start_soon(one, name)
        if omitted:
            notes.append(f"{omitted} more DLQ(s) not read: only the {MAX_DLQS} deepest are shown")
        return {"available": True, "reason": None, "dlqs": [out[name] for name in shown], "omitted": omitted,
                "notes": notes, "read_at": time.time(),
                "untrusted": ["dlqs[].groups[].signature", "dlqs[].groups[].error_message", "dlqs[].notes"]}

    async def _dlq_groups(self, name: str, depth: int) -> dict[str, Any]:
        base: dict[str, Any] = {"queue": name, "depth": depth, "messages_read": 0, "approximate_total": depth,
                                "truncated": False, "notes": [], "error": None, "groups": []}
        states = self.runtime.queues
        if depth == 0 or states is None:
            return base
        try:
            read, _ = await states.read_dlq(name, self.runtime.settings.console_dlq_read)
        except OpsError as exc:
            return {**base, "error": str(exc)}
        return {**base, **failure_groups_of(read)}

    # ------------------------------------------------------------------- depths -------
    async def depths(self) -> dict[str, Any]:
        """The last hour of every DLQ's depth: the poller's ring, and before its first sample
        (nobody listened) CloudWatch's ``AWS/SQS ApproximateNumberOfMessagesVisible``
        (1-minute Maximum; SQS publishes it for every queue) when ``runtime.metrics`` is set
        (the metrics toolset is on).

        Returns :meth:`~opsmcp.calls.depth_history.DepthHistory.read`'s answer (``queues``:
        the ring's samples of every tracked queue) plus ``available``, ``polling`` (the
        poller runs: someone listens), ``dlqs`` (names of the DLQs), ``cloudwatch``
        (DLQ -> ``[[epoch s, depth], ...]`` before the ring's first sample of it, at most
        :data:`MAX_DLQS` DLQs, or an ``error``) and ``notes``.
        """
        poller = self.runtime.poller
        if poller is None:
            return {"available": False, "reason": "the queues toolset is off (OPSMCP_TOOLSETS)", "queues": {},
                    "dlqs": [], "cloudwatch": {}}
        history = poller.history.read()
        dlqs = sorted(name for name, s in poller.state.items() if s.get("is_dlq"))
        if not poller.state:  # no poll finished yet
            dlqs = sorted(await self._dlq_depths())
        notes = ["sampled every OPSMCP_EVENTS_POLL_SECONDS while someone listens to /events"]
        if history["untracked"]:
            notes.append(f"{history['untracked']} queue(s) not tracked (over {poller.history.max_queues})")
        cloudwatch: dict[str, Any] = {}
        backend = self.runtime.metrics
        if backend is not None and dlqs:
            earlier = await self.depths_cache.get("cloudwatch", lambda: self._cloudwatch_depths(
                backend, dlqs[:MAX_DLQS]), still_good=lambda kept: set(kept) == set(dlqs[:MAX_DLQS]))
            for name, points in earlier.items():
                first = history["queues"].get(name, [[None]])[0][0]
                cloudwatch[name] = [p for p in points if first is None or p[0] < first] if isinstance(
                    points, list) else points
            notes.append("before the first sample: CloudWatch AWS/SQS ApproximateNumberOfMessagesVisible "
                         "(1-minute Maximum; visible messages only)")
        return {**history, "available": True, "reason": None, "polling": poller.running, "dlqs": dlqs,
                "cloudwatch": cloudwatch, "notes": notes}

    async def _cloudwatch_depths(self, backend: CloudWatchBackend, dlqs: list[str]) -> dict[str, Any]:
        end = datetime.now(UTC)
        out: dict[str, Any] = {}
        for name in dlqs:
            try:
                series = await backend.get_metric_data("AWS/SQS", "ApproximateNumberOfMessagesVisible",
                                                       {"QueueName": name}, "Maximum", 60, end - timedelta(hours=1),
                                                       end)
            except OpsError as exc:
                out[name] = {"error": str(exc)}
                continue
            out[name] = [[t.timestamp(), v] for t, v in zip(series.timestamps, series.values, strict=True)]
        return out

    # ------------------------------------------------------------------ metrics -------
    async def metrics(self) -> dict[str, Any]:
        """The ``OPSMCP_CONSOLE_METRICS`` charts (see the module doc), reused for the cache time.

        Returns ``{"available", "reason", "charts": [{"title", "namespace", "metric", "stat",
        "unit", "period_seconds", "lines": [{"label", "dimensions", "points": [[epoch s, value]]}],
        "omitted", "error"}], "read_at"}``.
        """
        backend = self.runtime.metrics
        if backend is None:
            return {"available": False, "reason": "the metrics toolset is off (OPSMCP_TOOLSETS)", "charts": []}
        return await self.metrics_cache.get("charts", lambda: self._read_metrics(backend))

    async def _read_metrics(self, backend: CloudWatchBackend) -> dict[str, Any]:
        end = datetime.now(UTC)
        start = end - timedelta(hours=1)
        charts: list[dict[str, Any]] = []
        for chart in self.runtime.settings.console_metrics:
            shown: dict[str, Any] = {"title": chart.title, "namespace": chart.namespace, "metric": chart.metric,
                                     "stat": chart.stat, "unit": None, "period_seconds": 60, "lines": [],
                                     "omitted": 0, "error": None}
            charts.append(shown)
            try:
                sets = [dict(chart.dimensions)]
                if chart.split_by:
                    found, _ = await backend.list_metrics(chart.namespace, chart.metric, 100)
                    values = sorted({m.dimensions[chart.split_by] for m in found
                                     if chart.split_by in m.dimensions
                                     and all(m.dimensions.get(k) == v for k, v in chart.dimensions.items())})
                    shown["omitted"] = max(0, len(values) - MAX_LINES)
                    sets = [{**chart.dimensions, chart.split_by: v} for v in values[:MAX_LINES]]
                for dims in sets:
                    series = await backend.get_metric_data(chart.namespace, chart.metric, dims, chart.stat, 60,
                                                           start, end)
                    shown["unit"] = shown["unit"] or series.unit
                    label = dims.get(chart.split_by, chart.metric) if chart.split_by else chart.metric
                    shown["lines"].append({"label": label, "dimensions": dims, "points": [
                        [t.timestamp(), v] for t, v in zip(series.timestamps, series.values, strict=True)]})
            except OpsError as exc:
                shown["error"] = str(exc)
        return {"available": True, "reason": None, "charts": charts, "read_at": time.time(),
                "untrusted": ["charts[].lines[].label", "charts[].lines[].dimensions"]}

    def watch_metrics(self) -> None:
        """Publish a ``metrics`` event (the newest points of every chart) every
        ``OPSMCP_CONSOLE_CACHE_SECONDS`` while a listener of ``/events`` takes them (no
        ``?types=`` filter, or one naming ``metrics``); started by the ``/events`` route,
        ends by itself when no such listener is left (no-op while running or not wanted)."""
        if self.runtime.metrics is None or (self._feed is not None and not self._feed.done()):
            return
        if not self._metrics_wanted():
            return
        self._feed = asyncio.get_running_loop().create_task(self._metrics_feed(), name="opsmcp-console-metrics")

    def _metrics_wanted(self) -> bool:
        return any(listener.types is None or "metrics" in listener.types for listener in self.runtime.events.listeners)

    async def _metrics_feed(self) -> None:
        hub = self.runtime.events
        while self._metrics_wanted():
            try:
                answer = await self.metrics()
            except Exception as exc:  # a backend outage must not end the feed
                log.warning("console metrics: %s", exc)
            else:
                hub.publish("metrics", {"charts": [
                    {"title": c["title"], "error": c["error"],
                     "lines": [{"label": line["label"], "points": line["points"][-EVENT_POINTS:]}
                               for line in c["lines"]]} for c in answer["charts"]]})
            await asyncio.sleep(self.runtime.settings.console_cache_seconds)

    # ------------------------------------------------------------------- writes -------
    async def writes(self, limit: int) -> dict[str, Any]:
        """The last ``limit`` writes (1-:data:`MAX_WRITES`) from the audit log, newest first.

        Each row: ``call_id``, ``tool``, ``caller`` (who asked), ``approver``, ``approval``,
        ``dry_run``, ``phase`` (the newest step: requested, approved, denied, intent,
        outcome...), ``outcome``, ``counts``, ``arguments`` (redacted), ``started``,
        ``time`` (of the newest step), ``note``. ``truncated``: the audit log holds more
        than the records read.
        """
        sink = self.runtime.audit
        if sink is None:
            return {"available": False, "reason": "the audit log is off", "writes": []}
        try:
            seen = self._last_write_event()  # a write recorded since the kept read makes it stale
            newest, read, _ = await self.writes_cache.get("writes", lambda: self._fold_writes(sink, seen),
                                                           still_good=lambda kept: kept[2] == seen)
        except OpsError as exc:
            return {"available": False, "reason": str(exc), "writes": []}
        limit = max(1, min(limit, MAX_WRITES))
        notes = []
        if read >= AUDIT_RECORDS:
            notes.append(f"read the newest {AUDIT_RECORDS} audit records; older writes are in the audit log "
                         "(opsmcp audit tail)")
        return {"available": True, "reason": None, "writes": newest[:limit], "truncated": len(newest) > limit,
                "records_read": read, "notes": notes, "untrusted": ["writes[].arguments", "writes[].note"]}

    def _last_write_event(self) -> int:
        latest = self.runtime.events.latest("write")
        return latest[-1].id if latest else 0

    async def _fold_writes(self, sink: AuditSink, seen: int) -> tuple[list[dict[str, Any]], int, int]:
        """The newest :data:`AUDIT_RECORDS` audit records folded to one row per ``call_id``,
        newest first, how many records were read, and ``seen`` (the newest ``write`` event
        id when the read started)."""
        records = await sink.tail(AUDIT_RECORDS)  # off the event loop: the sink's own worker thread or AWS call
        rows: dict[str, dict[str, Any]] = {}
        for r in records:
            if not isinstance(r, dict) or "call_id" not in r or r.get("phase") == "progress":
                continue
            row = rows.get(r["call_id"])
            if row is None:
                row = rows[r["call_id"]] = {"call_id": r["call_id"], "tool": r.get("tool"), "caller": r.get("caller"),
                                            "started": r.get("time"), "arguments": r.get("arguments"),
                                            "dry_run": r.get("dry_run"), "approver": None, "counts": None,
                                            "note": None}
            elif r.get("phase") in ("intent", "requested"):  # the requester, not who approved
                row["caller"] = r.get("caller")
            rows.pop(r["call_id"])  # newest step last
            rows[r["call_id"]] = row
            row.update(phase=r.get("phase"), outcome=r.get("outcome"), time=r.get("time"),
                       approval=r.get("approval") or row.get("approval"))
            if r.get("dry_run") is not None and r.get("phase") in ("intent", "outcome"):
                row["dry_run"] = r["dry_run"]
            for key in ("approver", "counts", "note"):
                if r.get(key) is not None:
                    row[key] = r[key]
            if r.get("phase") in ("approved", "denied", "expired"):
                row["approver"] = r.get("caller")
        return list(rows.values())[::-1][:MAX_WRITES], len(records), seen

    # ------------------------------------------------------------------- alerts -------
    async def alerts(self, limit: int) -> dict[str, Any]:
        """The alert store's alerts (``runtime.alerts``), firing first, newest start first, at
        most ``limit`` (1-:data:`MAX_ALERTS`), each summarised as ``list_alerts`` does.

        Raises:
            OpsError: the store could not be read.
        """
        store = self.runtime.alerts
        if store is None:
            return {"available": False, "reason": "alerts are off: set OPSMCP_ALERTMANAGER_URL (or "
                                                  "OPSMCP_ALERTS_TABLE) and keep 'alerts' in OPSMCP_TOOLSETS",
                    "alerts": []}
        limit = max(1, min(limit, MAX_ALERTS))
        found = newest_firing_first(await store.all())
        notes = [] if found else ["no alerts received yet: point an Alertmanager webhook receiver at "
                                  "POST /webhooks/alertmanager"]
        return {"available": True, "reason": None, "total": len(found),
                "firing": sum(a.status == "firing" for a in found), "alerts": [brief(a) for a in found[:limit]],
                "truncated": len(found) > limit, "notes": notes,
                "untrusted": ["alerts[].summary", "alerts[].alertname"]}


def failure_groups_of(read: DlqRead) -> dict[str, Any]:
    """One DLQ's entry of the failure-groups panel from its shared read: ``messages_read``,
    ``approximate_total``, ``truncated`` (the read did not see the whole DLQ, or a group has
    more order ids than the :data:`ORDER_IDS_SHOWN` shown), ``notes`` (what the read missed
    and why) and ``groups`` (biggest first, as ``analyze_dlq`` lists them)."""
    groups = [{"signature": g.signature, "basis": g.basis, "service": g.service, "error_message": g.error_message,
               "count": g.count, "first_sent": g.first_sent, "last_sent": g.last_sent,
               "order_ids": g.order_ids[:ORDER_IDS_SHOWN]} for g in read.groups]
    cut = any(len(g.order_ids) > ORDER_IDS_SHOWN for g in read.groups)
    return {"messages_read": read.messages_read, "approximate_total": read.total,
            "truncated": bool(read.reasons()) or cut,
            "notes": read.notes("OPSMCP_CONSOLE_DLQ_READ sets how many messages the console reads per DLQ"),
            "groups": groups}
