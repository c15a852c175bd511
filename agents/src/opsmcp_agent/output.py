"""Terminal output: live step lines while a run goes, then the answer and its evidence.

:class:`StepPrinter` is the live :class:`~opsmcp_agent.agent.Observer`;
:func:`format_answer` renders a finished :class:`~opsmcp_agent.agent.RunResult`.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .agent import RunResult, Step
from .render import format_args
from .session import Confirmation


class StepPrinter:
    """Prints each step as it happens.

    Lines look like::

        → [1] analyze_dlq(queue="order-queue-dlq")
          ← queue="order-queue-dlq", total=42, groups=[3]  (0.08s)

    Args:
        out: where to print (default ``sys.stdout``); with ``--json`` the CLI passes
            ``sys.stderr`` so stdout stays one JSON document.
        quiet: print nothing.
    """

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def step_started(self, step: Step) -> None:
        """Print ``→ [n] tool(args)`` before the call runs."""
        self._print(f"→ [{step.index}] {step.tool}({format_args(step.args)})")

    def step_finished(self, step: Step) -> None:
        """Print ``← one-line result (seconds)``; errors are marked ``✗``."""
        mark = "←" if step.ok else "✗"
        self._print(f"  {mark} {step.summary}  ({step.seconds:.2f}s)")

    def model_note(self, text: str) -> None:
        """Print what the model said alongside its tool calls, as a dim aside."""
        first = " ".join(text.split())
        self._print(f"  · {first[:200]}{'…' if len(first) > 200 else ''}")

    def confirmation(self, item: Confirmation) -> None:
        """Print the outcome of a confirmation request."""
        verdict = "approved" if item.approved else "declined"
        self._print(f"  ! confirmation for {item.tool or 'a write'}: {verdict} ({item.how})")


def format_answer(result: RunResult) -> str:
    """Render the answer followed by the evidence it used.

    Args:
        result: a finished run.

    Returns:
        Text with an ``Answer`` section and an ``Evidence`` section listing every step
        (``*`` marks the steps the answer cites) with its tool, arguments and one-line
        result. A run stopped by a limit is flagged in the heading.
    """
    head = "Answer" if not result.stopped else f"Answer (partial — stopped by the {result.stopped.replace('_', ' ')})"
    lines = [f"\n=== {head} ===", result.answer.strip(), ""]
    lines.append("=== Evidence ===")
    if not result.steps:
        lines.append("(no tools were called)")
    cited = set(result.cited)
    for s in result.steps:
        mark = "*" if s.index in cited else " "
        status = "" if s.ok else " [error]"
        lines.append(f"{mark}[{s.index}] {s.tool}({format_args(s.args, 100)}){status}: {s.summary}")
    if cited:
        lines.append("(* = cited in the answer)")
    lines.append(f"({len(result.steps)} tool call(s), {result.elapsed:.1f}s)")
    return "\n".join(lines)
