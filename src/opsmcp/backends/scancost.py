"""What the log engines that bill (or strain) per byte read have read: a small ledger.

CloudWatch Logs Insights bills per GB scanned; Loki reports bytes processed per query.
Each such backend owns a :class:`ScanUsage` and adds every query's figures to it; the
server's ``/metrics`` reads it (:mod:`opsmcp.telemetry`), and each tool result's notes
say what its own call read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ScanTotals:
    """Cumulative figures of one backend since start (a snapshot)."""

    backend: str
    queries: int
    bytes_scanned: int
    records_scanned: int
    records_matched: int
    stopped: int  # queries stopped by a bound (bytes, time) or a cancelled call


class ScanUsage:
    """Thread-safe cumulative counters of one log backend (``backend`` names it in metrics)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._queries = self._bytes = self._records = self._matched = self._stopped = 0

    def add(self, *, bytes_scanned: float = 0, records_scanned: float = 0, records_matched: float = 0,
            stopped: bool = False) -> None:
        """Count one query and what it read (negative or missing figures count as 0)."""
        with self._lock:
            self._queries += 1
            self._bytes += max(0, int(bytes_scanned or 0))
            self._records += max(0, int(records_scanned or 0))
            self._matched += max(0, int(records_matched or 0))
            self._stopped += int(stopped)

    def snapshot(self) -> ScanTotals:
        """The totals so far."""
        with self._lock:
            return ScanTotals(self.backend, self._queries, self._bytes, self._records, self._matched, self._stopped)


def human_bytes(n: float) -> str:
    """``1234567`` → ``1.2 MB`` (decimal units, as AWS bills)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
