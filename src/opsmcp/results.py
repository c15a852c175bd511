"""The base of every tool result, and how a limit argument is clamped.

Toolsets (and the domain logic under :mod:`opsmcp.analysis`) return subclasses of
:class:`Result`; the call pipeline cuts them to the size budget
(:mod:`opsmcp.result_size`) using the fields defined here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from opsmcp.errors import InvalidInput


class Result(BaseModel):
    """Base of every tool result: bounded, and says so when it was cut.

    ``truncated`` is true when the answer was cut to fit the size budget or a limit;
    ``next_cursor`` (when set) is passed back as ``cursor`` to get the rest; ``notes``
    carries warnings and labels (clamped limits, SQS peek side effects) for the model.
    """

    model_config = ConfigDict(extra="forbid")

    truncated: bool = Field(False, description="True when more data exists than was returned.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` to continue, when set.")
    notes: list[str] = Field(default_factory=list, description="Warnings and labels about this result.")


def clamp(name: str, value: int, lo: int, hi: int, notes: list[str]) -> int:
    """``value`` limited to ``lo``..``hi``; a clamped value is labelled in ``notes`` (an
    out-of-range limit is adjusted, not refused).

    Raises:
        InvalidInput: ``value`` is not a whole number.
    """
    try:
        asked = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}={value!r} is not a whole number.", f"use a number from {lo} to {hi}.") from None
    got = max(lo, min(hi, asked))
    if got != asked:
        notes.append(f"{name}={asked} is outside {lo}-{hi}; clamped to {got}")
    return got
