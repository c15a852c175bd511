"""The size budget: how big one answer (or one audit record) may get, and how to cut it.

One place for every size rule, so a tool result, an approval prompt and an audit record are
cut the same way and always say so (it sits below the toolsets, which cut early where they
know better what to drop first, and below the call pipeline, which cuts every result):

- :func:`cut_text` shortens one string and marks the cut (``…[cut: N more characters]``):
  approval prompts, audit records, argument errors.
- :func:`take_within` keeps the leading items of a list that fit a byte budget: the logs
  toolset's loops over search hits and trace lines.
- :func:`room_for` turns the byte budget into a number of items of a known size: the metric
  toolsets downsample a series to that many points instead of cutting it.
- :func:`cap_values` walks a JSON-like value and cuts every long string in it (audit
  records: long argument values are cut and marked, never dropped silently).
- :func:`fit_result` cuts a :class:`~opsmcp.results.Result` to the result budget
  (``OPSMCP_MAX_RESULT_BYTES``): optional tool-specific shrink steps first (the playbooks
  toolset's: stdout, diffs, outputs, tasks), then the longest top-level list from its end;
  it sets ``truncated`` and explains the cut in ``notes``. The choke point calls it on every
  tool result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from opsmcp.results import Result

T = TypeVar("T")
R = TypeVar("R")

#: A shrink step for :func:`fit_result`: shrinks the result in place and returns a note
#: saying what it cut, or ``None`` when it cut nothing.
ShrinkStep = Callable[[Any], "str | None"]


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (a pydantic model through its own dump)."""
    if isinstance(value, BaseModel):
        return len(value.model_dump_json().encode())
    text = json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate (hostile input) is measured, not raised


def cut_text(text: str, limit: int, *, keep: Literal["head", "tail"] = "head") -> str:
    """``text`` shortened to about ``limit`` characters, marked where it was cut.

    Args:
        text: any string.
        limit: characters to keep (the marker adds about 30 more); ``limit >= 0``.
        keep: ``"head"`` keeps the start (arguments, messages), ``"tail"`` the end (stdout).

    Returns ``text`` unchanged when it fits; otherwise the kept part plus
    ``…[cut: N more characters]`` (before the kept tail for ``keep="tail"``).
    """
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    if keep == "tail":
        return f"[cut: {dropped} earlier characters]…" + text[len(text) - limit:]
    return text[:limit] + f"…[cut: {dropped} more characters]"


def take_within(items: Iterable[T], budget: int, size_of: Callable[[T], int], used: int = 0) -> tuple[list[T], bool]:
    """The leading ``items`` whose sizes, added to ``used``, stay within ``budget`` bytes.

    The first item is always kept (an answer is never empty because one item is large).
    Returns ``(kept, cut)``; ``cut`` is true when items were left out.
    """
    kept: list[T] = []
    total = used
    for item in items:
        total += size_of(item)
        if total > budget and kept:
            return kept, True
        kept.append(item)
    return kept, False


def room_for(budget: int, item_bytes: int, *, reserve: int = 3_000, parts: int = 1, low: int = 10,
             high: int | None = None) -> int:
    """How many items of about ``item_bytes`` each fit in ``budget`` bytes after ``reserve``
    bytes for the rest of the answer, per each of ``parts`` lists (series), held to
    ``low``..``high``: an answer that would be too large is shown coarser, never empty."""
    room = (budget - reserve) // (max(1, parts) * max(1, item_bytes))
    return max(low, room if high is None else min(high, room))


def cap_values(value: Any, max_chars: int) -> tuple[Any, int]:
    """A copy of the JSON-like ``value`` with every string longer than ``max_chars`` cut
    (:func:`cut_text`); returns ``(copy, number of strings cut)``. Dict keys are cut too."""
    if isinstance(value, str):
        return (cut_text(value, max_chars), 1) if len(value) > max_chars else (value, 0)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        cuts = 0
        for k, v in value.items():
            key, kc = cap_values(k, max_chars) if isinstance(k, str) else (k, 0)
            out[key], vc = cap_values(v, max_chars)
            cuts += kc + vc
        return out, cuts
    if isinstance(value, (list, tuple)):
        items = [cap_values(v, max_chars) for v in value]
        return [v for v, _ in items], sum(c for _, c in items)
    return value, 0


def fit_result(result: R, budget: int, *, steps: Sequence[ShrinkStep] = ()) -> R:
    """Cut a :class:`Result` to at most ``budget`` bytes of JSON; other values pass unchanged.

    First the tool's own ``steps`` run in order while the result is over budget (each
    returns a note or ``None``); then the longest top-level list field (``notes`` aside) is
    trimmed from its end until the JSON fits. Every cut sets ``truncated`` and adds a note.
    A page that was cut loses its ``next_cursor`` (following it would skip the cut items):
    the note says which ``limit`` pages without gaps. A ``count`` field that counted the
    cut list is updated. A result with nothing left to cut is returned over budget, labelled.
    """
    if not isinstance(result, Result):
        return result
    size = json_size(result)
    if size <= budget:
        return result
    for step in steps:
        note = step(result)
        if note:
            result.truncated = True
            result.notes.append(note)
        size = json_size(result)
        if size <= budget:
            return result
    lists = {name: list(getattr(result, name)) for name in type(result).model_fields
             if isinstance(getattr(result, name), list) and name not in ("notes", "untrusted")}
    original = {name: len(items) for name, items in lists.items()}
    while size > budget and any(lists.values()):
        name = max(lists, key=lambda n: json_size([i.model_dump(mode="json") if isinstance(i, BaseModel) else i
                                                   for i in lists[n]]))
        items = lists[name]
        drop = max(1, len(items) // 4) if len(items) > 8 else 1
        del items[-drop:]
        setattr(result, name, items)
        size = json_size(result)
    cut = {name: (len(lists[name]), n) for name, n in original.items() if len(lists[name]) < n}
    result.truncated = True
    if not cut:
        result.notes.append(f"result is larger than the {budget}-byte budget and has nothing to cut")
        return result
    if "count" in type(result).model_fields and getattr(result, "count", None) in {n for _, n in cut.values()}:
        result.count = max(kept for kept, _ in cut.values())  # type: ignore[attr-defined]
    how = "; ".join(f"{name}: {kept} of {n}" for name, (kept, n) in cut.items())
    note = f"result cut to the {budget}-byte budget ({how}); narrow the query or lower the limit"
    if result.next_cursor:
        result.next_cursor = None
        kept = min(kept for kept, _ in cut.values())
        note += f"; the page's cursor was dropped (it would skip the cut items): call again with limit={max(1, kept)}"
    result.notes.append(note)
    return result
