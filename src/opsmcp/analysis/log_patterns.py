"""Log pattern mining for ``log_patterns``: what changed in the logs when it broke.

Messages are clustered into templates with drain3 (the standard Drain implementation):
``Database connection timeout after 5000ms (orders-db.cluster:5432)`` becomes
``Database connection timeout after <NUM>ms (<HOST>)``. The lines come from any
:class:`~opsmcp.backends.logbackend.LogBackend` through its paged ``search`` (streaming:
memory is bounded by the cluster limit, whatever the window). A window with more lines
than :data:`MAX_MINED_LINES` is sampled: equal shares from ten equal slices of it, said in
the notes, with counts scaled to the window.

Compared with a baseline window (by default the same length just before), each pattern
is ``new`` (no baseline line), ``grew`` (at least :data:`GREW_FACTOR` times the baseline's
estimated count) or ``steady``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsmcp.backends.logbackend import LogBackend, LogRecord
from opsmcp.errors import OpsError

MAX_MINED_LINES = 20_000
PAGE = 500
SLICES = 10
GREW_FACTOR = 2.0
MAX_CLUSTERS = 2_000
MAX_MESSAGE = 2_000
MASKS = (  # (regex, mask name): ids and values that would otherwise split one template into many
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "UUID"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "IP"),
    (r"\b[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+:\d+\b", "HOST"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?=ms\b|s\b|%|\b)", "NUM"),
)


@dataclass
class Cluster:
    """What one template saw: counts per window, first/last time, services, one sample."""

    count: int = 0
    baseline: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    services: dict[str, int] = field(default_factory=dict)
    sample: LogRecord | None = None


@dataclass
class Window:
    """One mined window: lines matching, lines mined, and whether it was sampled."""

    total: int = 0
    mined: int = 0
    sampled: bool = False
    capped: bool = False

    @property
    def scale(self) -> float:
        """Estimated lines per mined line."""
        return self.total / self.mined if self.mined else 1.0


def _miner() -> Any:
    """A drain3 TemplateMiner with opsmcp's masks and a cluster limit (no persistence)."""
    try:
        from drain3 import TemplateMiner
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        raise OpsError("log_patterns needs the drain3 package.", "pip install drain3") from None
    logging.getLogger("drain3").setLevel(logging.WARNING)
    config = TemplateMinerConfig()
    config.masking_instructions = [MaskingInstruction(rx, name) for rx, name in MASKS]
    config.drain_max_clusters = MAX_CLUSTERS
    config.drain_sim_th = 0.5
    return TemplateMiner(config=config)


def window_lines(store: LogBackend, start: datetime, end: datetime, service: str | None, level: str | None,
                 window: Window, cap: int = MAX_MINED_LINES) -> Iterator[LogRecord]:
    """The window's lines, page by page (newest first); at most ``cap``, then ten equal
    slices of the window share the cap. Fills ``window`` as it goes."""
    first = store.search(None, service, level, None, start, end, min(PAGE, cap))
    window.total = first.total
    if first.total <= cap or not first.total_exact:
        yield from _pages(store, first, service, level, start, end, cap, window)
        return
    window.sampled = True
    span = (end - start) / SLICES
    share = cap // SLICES
    for i in range(SLICES):
        lo, hi = start + span * i, start + span * (i + 1)
        page = store.search(None, service, level, None, lo, hi, min(PAGE, share))
        yield from _pages(store, page, service, level, lo, hi, share, window)


def _pages(store: LogBackend, page: Any, service: str | None, level: str | None, start: datetime, end: datetime,
           cap: int, window: Window) -> Iterator[LogRecord]:
    taken = 0
    while True:
        for rec in page.hits[: cap - taken]:
            window.mined += 1
            taken += 1
            yield rec
        if taken >= cap or page.next_cursor is None:
            if page.next_cursor is None and taken < page.total and taken < cap:
                window.capped = True  # the engine could not page further
            return
        page = store.search(None, service, level, None, start, end, min(PAGE, cap - taken), page.next_cursor)


def mine(current: Iterator[LogRecord], baseline: Iterator[LogRecord] | None) -> tuple[dict[int, Cluster], Any]:
    """Cluster the baseline's lines (counted as ``baseline``) then the current window's, with
    one miner so both map onto the same templates. Returns (clusters by id, the miner)."""
    miner = _miner()
    clusters: dict[int, Cluster] = {}
    for rec in baseline or ():
        cid = miner.add_log_message(rec.message[:MAX_MESSAGE])["cluster_id"]
        clusters.setdefault(cid, Cluster()).baseline += 1
    for rec in current:
        cid = miner.add_log_message(rec.message[:MAX_MESSAGE])["cluster_id"]
        c = clusters.setdefault(cid, Cluster())
        c.count += 1
        c.first_ms = rec.ts_ms if c.first_ms is None else min(c.first_ms, rec.ts_ms)
        c.last_ms = rec.ts_ms if c.last_ms is None else max(c.last_ms, rec.ts_ms)
        c.services[rec.service] = c.services.get(rec.service, 0) + 1
        if c.sample is None or (rec.trace_id and not c.sample.trace_id):
            c.sample = rec
    return clusters, miner


def template_of(miner: Any, cid: int) -> str:
    """The final template of cluster ``cid`` (templates generalise as lines arrive)."""
    cluster = miner.drain.id_to_cluster.get(cid)
    return cluster.get_template() if cluster is not None else "?"


def status(c: Cluster, cur: Window, base: Window | None) -> tuple[str | None, float | None]:
    """``(status, growth)``: new / grew / steady against the baseline (None without one)."""
    if base is None:
        return None, None
    if c.baseline == 0:
        return "new", None
    growth = (c.count * cur.scale) / (c.baseline * base.scale)
    return ("grew" if growth >= GREW_FACTOR else "steady"), round(growth, 2)
