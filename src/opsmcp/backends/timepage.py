"""Newest-first pages by time for engines without a cursor of their own (CloudWatch Logs, Loki).

A page ends at some line; the next page is the same query with its window ending at that
line's time (inclusive), minus the lines at exactly that time already returned. The cursor
carries that time, the ids of those lines, and the first page's total (so later pages need
not count again). Ids are engine-local and unique per line (CloudWatch's ``@ptr`` or event
id, a hash of a Loki entry).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from opsmcp.backends.logbackend import LogRecord
from opsmcp.errors import InvalidInput

MAX_SEEN = 1_000  # ids of one timestamp a cursor carries (more lines in one instant are skipped, said in notes)


@dataclass
class TimeCursor:
    """Where the next page starts: lines at ``t`` whose id is in ``seen`` were returned."""

    engine: str
    t: int
    seen: list[str]
    total: int
    exact: bool

    def encode(self) -> str:
        """The opaque cursor string (URL-safe base64 JSON)."""
        raw = json.dumps({"k": self.engine, "t": self.t, "s": self.seen, "n": self.total, "x": self.exact},
                         separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str, engine: str) -> TimeCursor:
        """Read a cursor made by :meth:`encode` for ``engine``.

        Raises:
            InvalidInput: not such a cursor (mangled, or another engine's).
        """
        try:
            state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            ok = (isinstance(state, dict) and state.get("k") == engine and isinstance(state.get("t"), int)
                  and isinstance(state.get("s"), list) and all(isinstance(s, str) for s in state["s"])
                  and isinstance(state.get("n"), int))
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            ok = False
        if not ok:
            raise InvalidInput(f"Cannot read cursor {cursor[:40]!r}.",
                               "pass next_cursor from the previous result unchanged.")
        return cls(engine, state["t"], state["s"][:MAX_SEEN], state["n"], bool(state.get("x", True)))


def after(rows: Sequence[tuple[int, str, LogRecord]], cursor: TimeCursor | None) -> list[tuple[int, str, LogRecord]]:
    """``rows`` (time, id, record), newest first, without those a page before already returned."""
    if cursor is None:
        return list(rows)
    seen = set(cursor.seen)
    return [r for r in rows if r[0] < cursor.t or (r[0] == cursor.t and r[1] not in seen)]


def take(rows: Sequence[tuple[int, str, LogRecord]], limit: int, cursor: TimeCursor | None, engine: str,
         total: int, exact: bool, *, more: bool) -> tuple[list[LogRecord], str | None]:
    """The first ``limit`` of ``rows`` (already past ``cursor``) and the next cursor, when
    ``more`` lines follow (more rows here, or more in the engine)."""
    page = list(rows[:limit])
    if not page or not (more or len(rows) > limit):
        return [r[2] for r in page], None
    last_t = page[-1][0]
    seen = [r[1] for r in page if r[0] == last_t]
    if cursor is not None and cursor.t == last_t:
        seen = cursor.seen + seen
    nxt = TimeCursor(engine, last_t, seen[-MAX_SEEN:], total, exact).encode()
    for r in page:
        r[2].cursor = None
    page[-1][2].cursor = nxt
    return [r[2] for r in page], nxt
