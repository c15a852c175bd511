"""Queue depth over the last hour: a bounded ring of samples per queue, filled by the
``/events`` depth poller and read by the console's depth charts.

The poller (:class:`~opsmcp.calls.events.DepthPoller`) records every queue's depth
(visible + in flight) on every poll; :class:`DepthHistory` keeps at most one sample per
``spacing`` seconds per queue unless the depth changed, drops samples older than
``window`` seconds, and tracks at most ``max_queues`` queues. Memory is bounded by
``max_queues * (2 * window / spacing)`` samples whatever the poll interval.

The poller runs only while someone listens to ``/events``, so the ring holds what was
sampled then: :meth:`DepthHistory.read` says from when (``since``) and how many queues it
could not track.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Default length of the history, seconds (one hour).
WINDOW_SECONDS = 3600.0
#: Default smallest gap between two samples of an unchanged depth, seconds.
SPACING_SECONDS = 10.0
#: Default most queues tracked.
MAX_QUEUES = 500


@dataclass
class DepthHistory:
    """Per-queue ring of ``(epoch seconds, depth)`` samples (see the module doc).

    Args:
        window: seconds of history kept (> 0).
        spacing: smallest gap between two samples of an unchanged depth, seconds (> 0).
        max_queues: most queues tracked; samples of further queues are not kept (counted
            in ``untracked``).
    """

    window: float = WINDOW_SECONDS
    spacing: float = SPACING_SECONDS
    max_queues: int = MAX_QUEUES
    rings: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    untracked: set[str] = field(default_factory=set)

    @property
    def per_queue(self) -> int:
        """The most samples one queue keeps (a changed depth may be sampled more often
        than ``spacing``; the ring then holds less than the whole window)."""
        return max(2, int(2 * self.window / self.spacing))

    def record(self, queue: str, depth: int, at: float | None = None) -> None:
        """Add ``queue``'s ``depth`` at ``at`` (epoch seconds; default now).

        A sample equal to the last one and less than ``spacing`` seconds after it is not
        kept; neither is a sample of a queue beyond ``max_queues`` (only its name is kept,
        in a set bounded the same way).
        """
        at = time.time() if at is None else at
        ring = self.rings.get(queue)
        if ring is None:
            if len(self.rings) >= self.max_queues:
                if len(self.untracked) < self.max_queues:
                    self.untracked.add(queue)
                return
            ring = self.rings[queue] = deque(maxlen=self.per_queue)
        if ring and ring[-1][1] == depth and at - ring[-1][0] < self.spacing:
            return
        ring.append((at, depth))
        while ring and ring[0][0] < at - self.window:
            ring.popleft()

    def forget(self, queue: str) -> None:
        """Drop a queue that no longer exists."""
        self.rings.pop(queue, None)
        self.untracked.discard(queue)

    def read(self, queues: list[str] | None = None, now: float | None = None) -> dict[str, Any]:
        """The samples of the last ``window`` seconds.

        Args:
            queues: only these queues (None: every tracked queue).
            now: the present, epoch seconds (default now).

        Returns:
            ``{"window_seconds", "spacing_seconds", "since" (oldest sample kept, epoch s, or
            None), "queues": {name: [[epoch s, depth], ...] oldest first}, "untracked"
            (how many queues were not tracked: over ``max_queues``)}``.
        """
        now = time.time() if now is None else now
        names = sorted(self.rings) if queues is None else [q for q in queues if q in self.rings]
        out = {name: [[t, d] for t, d in self.rings[name] if t >= now - self.window] for name in names}
        oldest = [points[0][0] for points in out.values() if points]
        return {"window_seconds": self.window, "spacing_seconds": self.spacing,
                "since": min(oldest) if oldest else None, "queues": out, "untracked": len(self.untracked)}
