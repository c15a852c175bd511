"""Run results: the bounded models of one playbook run and the collector that builds them
from ansible-runner's events.

:class:`EventCollector` receives every event of a run (in the runner's thread) and keeps
only what a result needs, within fixed bounds: at most ``MAX_TASKS`` task results,
``MAX_DIFFS`` diffs of ``MAX_DIFF_BYTES`` each, messages and debug outputs cut to
``MAX_MESSAGE_CHARS`` / ``MAX_OUTPUT_CHARS``. :meth:`EventCollector.result` turns them into
a :class:`PlaybookRun`.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from opsmcp.backends.ansible.catalog import PlaybookEntry

log = logging.getLogger(__name__)

RunStatus = Literal["successful", "failed", "timeout", "canceled"]
TaskStatus = Literal["ok", "changed", "failed", "skipped", "unreachable"]

# Bounds of one PlaybookRun.
MAX_DIFFS = 20
MAX_DIFF_BYTES = 4_096
MAX_TASKS = 200
MAX_MESSAGE_CHARS = 1_000
MAX_OUTPUT_CHARS = 4_000

class TaskResult(BaseModel):
    """What one task did on one host."""

    task: str = Field(description="Task name.")
    host: str = Field(description="Host it ran on.")
    status: TaskStatus = Field(description="ok, changed, failed, skipped or unreachable.")
    message: str | None = Field(None, description="Why it failed (failed/unreachable), or the module's message.")
    output: str | None = Field(None, description="Output of debug tasks (bounded).")
    ignored: bool = Field(False, description="The failure was ignored (ignore_errors) and the run went on.")


class HostRecap(BaseModel):
    """Per-host totals from the play recap."""

    ok: int = Field(0, description="Tasks that succeeded (changed ones included).")
    changed: int = Field(0, description="Tasks that changed something (or would, in check mode).")
    failed: int = Field(0, description="Tasks that failed and stopped the host.")
    unreachable: int = Field(0, description="Tasks that could not reach the host.")
    skipped: int = Field(0, description="Tasks skipped (a condition, or a command in check mode).")
    rescued: int = Field(0, description="Failures handled by a rescue block.")
    ignored: int = Field(0, description="Failures ignored (ignore_errors).")


class FileDiff(BaseModel):
    """A --diff output of one task (what changed, or would change in check mode)."""

    task: str = Field(description="Task that produced it.")
    host: str = Field(description="Host.")
    diff: str = Field(description="Unified diff text.")
    truncated: bool = Field(False, description="The diff was cut to the size bound.")


class PlaybookRun(BaseModel):
    """The bounded outcome of one playbook run (the toolset returns it as its result, with
    the result envelope's ``truncated`` and ``notes`` added)."""

    name: str = Field(description="Catalog name of the playbook.")
    check: bool = Field(description="True for a check-mode (dry) run: nothing was changed.")
    status: RunStatus = Field(description="successful, failed, timeout or canceled.")
    changed: int = Field(0, description="Tasks that changed something (or would, in check mode), all hosts.")
    rc: int | None = Field(None, description="ansible-playbook exit code (254 after timeout/cancel).")
    duration_seconds: float = Field(description="Wall-clock duration of the run, seconds.")
    failed_task: str | None = Field(None, description="First task that failed (not ignored), if any.")
    message: str | None = Field(None, description="One-line summary of what went wrong, if anything.")
    tasks: list[TaskResult] = Field(default_factory=list, description="Per task and host, in order.")
    tasks_truncated: bool = Field(False, description="More task results existed than were kept.")
    recap: dict[str, HostRecap] = Field(default_factory=dict, description="Per-host totals.")
    diffs: list[FileDiff] = Field(default_factory=list, description="Diffs, at most ~20.")
    diffs_truncated: bool = Field(False, description="More diffs existed, or some were cut.")
    stdout_tail: str = Field("", description="Last lines of ansible-playbook's output.")
    stdout_truncated: bool = Field(False, description="Earlier output was dropped.")


@dataclass(frozen=True)
class TaskEvent:
    """Progress of a run, passed to ``on_event`` from the thread that runs the playbook.

    Attributes:
        kind: ``task_start`` (a task begins) or ``task_end`` (a task finished on a host).
        task: task name.
        index: 1-based number of the task in this run.
        total: estimated number of tasks in the playbook (None if unknown); ``index`` may
            exceed it when includes or loops add tasks.
        host: host, for ``task_end``.
        status: ok/changed/failed/skipped/unreachable, for ``task_end``.
    """

    kind: Literal["task_start", "task_end"]
    task: str
    index: int
    total: int | None = None
    host: str | None = None
    status: str | None = None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + " ...[truncated]"


class EventCollector:
    """Builds a :class:`PlaybookRun` from ansible-runner events (called in the runner's thread).

    Args:
        entry: the catalog entry being run (its name goes into the result).
        on_event: called with a :class:`TaskEvent` at each task start and each task result;
            exceptions it raises are logged and ignored.
        total: the estimated number of tasks, for progress (None if unknown).
    """

    _RESULT_EVENTS: ClassVar[dict[str, str]] = {
        "runner_on_ok": "ok",
        "runner_on_failed": "failed",
        "runner_on_skipped": "skipped",
        "runner_on_unreachable": "unreachable",
    }

    def __init__(self, entry: PlaybookEntry, on_event: Callable[[TaskEvent], None] | None, total: int | None):
        self.entry = entry
        self.on_event = on_event
        self.total = total
        self.index = 0
        self.tasks: list[TaskResult] = []
        self.tasks_truncated = False
        self.diffs: list[FileDiff] = []
        self.diffs_truncated = False
        self.stats: dict[str, Any] | None = None
        self.failed_task: str | None = None
        self.failed_message: str | None = None
        self.errors: deque[str] = deque(maxlen=3)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's ``event_handler``: record one event. Never raises; returns False
        so that runner writes no event files."""
        try:
            self._handle(event)
        except Exception:  # never let bookkeeping kill the run
            log.exception("error while handling ansible-runner event %s", event.get("event"))
        return False  # no need for runner to write event files: we keep what we need

    def _emit(self, ev: TaskEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(ev)
        except Exception:
            log.exception("on_event callback failed")

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.index += 1
            total = max(self.total, self.index) if self.total else None
            self._emit(TaskEvent("task_start", _task_name(data), self.index, total))
        elif kind in self._RESULT_EVENTS:
            self._result(self._RESULT_EVENTS[kind], data)
        elif kind == "playbook_on_stats":
            self.stats = data
        elif kind == "verbose":
            line = (event.get("stdout") or "").strip()
            if "ERROR!" in line or line.startswith("[ERROR]"):
                self.errors.append(line)

    def _result(self, status: str, data: dict[str, Any]) -> None:
        res = data.get("res") or {}
        task = _task_name(data)
        host = str(data.get("host") or data.get("remote_addr") or "?")
        if status == "ok" and (res.get("changed") or data.get("changed")):
            status = "changed"
        ignored = bool(data.get("ignore_errors")) and status == "failed"
        message = None
        if status in ("failed", "unreachable"):
            message = _failure_message(res)
        elif isinstance(res.get("msg"), str) and data.get("task_action") not in ("debug", "ansible.builtin.debug"):
            message = res["msg"]
        output = None
        if data.get("task_action") in ("debug", "ansible.builtin.debug") and status != "skipped":
            shown = {k: v for k, v in res.items() if not k.startswith("_") and k not in ("changed", "failed")}
            out = shown.get("msg", shown)
            output = out if isinstance(out, str) else json.dumps(out, default=str, indent=1)
            output = _clip(output, MAX_OUTPUT_CHARS)
        result = TaskResult(
            task=task,
            host=host,
            status=status,
            message=_clip(message, MAX_MESSAGE_CHARS) if message else None,
            output=output,
            ignored=ignored,
        )
        if len(self.tasks) < MAX_TASKS:
            self.tasks.append(result)
        else:
            self.tasks_truncated = True
        if status in ("failed", "unreachable") and not ignored and self.failed_task is None:
            self.failed_task = task
            self.failed_message = message
        self._collect_diffs(task, host, res)
        total = max(self.total, self.index) if self.total else None
        self._emit(TaskEvent("task_end", task, max(self.index, 1), total, host, status))

    def _collect_diffs(self, task: str, host: str, res: dict[str, Any]) -> None:
        found: list[Any] = []
        for source in [res, *[r for r in res.get("results") or [] if isinstance(r, dict)]]:
            d = source.get("diff")
            if isinstance(d, list):
                found.extend(d)
            elif d:
                found.append(d)
        for d in found:
            text = _render_diff(d)
            if not text:
                continue
            if len(self.diffs) >= MAX_DIFFS:
                self.diffs_truncated = True
                return
            cut = len(text.encode()) > MAX_DIFF_BYTES
            if cut:
                text = text.encode()[:MAX_DIFF_BYTES].decode("utf-8", errors="ignore") + "\n...[truncated]"
                self.diffs_truncated = True
            self.diffs.append(FileDiff(task=task, host=host, diff=text, truncated=cut))

    def result(
        self,
        *,
        check: bool,
        status: str,
        rc: int | None,
        duration: float,
        stdout_tail: str,
        stdout_truncated: bool,
        timeout_seconds: float,
    ) -> PlaybookRun:
        """The run's bounded result: per-task results, recap (from the stats event, or
        counted from the task results when the run was killed first), diffs and a
        one-line ``message`` for failures, timeouts and cancels."""
        recap = self._recap()
        message: str | None = None
        if status == "timeout":
            message = f"The run was stopped after the {timeout_seconds:g} s time limit."
        elif status == "canceled":
            message = "The run was canceled."
        elif status == "failed":
            if self.failed_task:
                message = f"Task {self.failed_task!r} failed: {self.failed_message or 'no message'}"
            elif self.errors:
                message = self.errors[-1]
            else:
                lines = [ln for ln in stdout_tail.splitlines() if "ERROR" in ln]
                message = lines[-1] if lines else f"ansible-playbook exited with rc {rc}."
        if message and status in ("timeout", "canceled") and self.index:
            last = next((t.task for t in reversed(self.tasks)), None)
            message += f" {self.index} task(s) started" + (f"; last finished: {last!r}." if last else ".")
        return PlaybookRun(
            name=self.entry.name,
            check=check,
            status=status,
            changed=sum(r.changed for r in recap.values()),
            rc=rc,
            duration_seconds=duration,
            failed_task=self.failed_task,
            message=_clip(message, MAX_MESSAGE_CHARS) if message else None,
            tasks=self.tasks,
            tasks_truncated=self.tasks_truncated,
            recap=recap,
            diffs=self.diffs,
            diffs_truncated=self.diffs_truncated,
            stdout_tail=stdout_tail,
            stdout_truncated=stdout_truncated,
        )

    def _recap(self) -> dict[str, HostRecap]:
        if self.stats:
            keys = {
                "ok": "ok",
                "changed": "changed",
                "failures": "failed",
                "dark": "unreachable",
                "skipped": "skipped",
                "rescued": "rescued",
                "ignored": "ignored",
            }
            recap: dict[str, HostRecap] = {}
            hosts: set[str] = set()
            for src in keys:
                hosts.update((self.stats.get(src) or {}).keys())
            for host in sorted(hosts):
                counts = {dst: int((self.stats.get(src) or {}).get(host, 0)) for src, dst in keys.items()}
                recap[host] = HostRecap(**counts)
            return recap
        # Killed before the recap (timeout/cancel): count what we saw.
        recap = {}
        for t in self.tasks:
            r = recap.setdefault(t.host, HostRecap())
            if t.status == "changed":
                r.ok += 1
                r.changed += 1
            elif t.status == "ok":
                r.ok += 1
            elif t.status == "failed":
                if t.ignored:
                    r.ignored += 1
                else:
                    r.failed += 1
            elif t.status == "skipped":
                r.skipped += 1
            elif t.status == "unreachable":
                r.unreachable += 1
        return recap


def _task_name(data: dict[str, Any]) -> str:
    name = str(data.get("task") or data.get("name") or "").strip()
    return name or str(data.get("task_action") or "unnamed task")


def _failure_message(res: dict[str, Any]) -> str:
    parts: list[str] = []
    if res.get("msg"):
        parts.append(str(res["msg"]))
    for key in ("stderr", "module_stderr", "stdout"):
        val = res.get(key)
        if isinstance(val, str) and val.strip() and val.strip() not in parts:
            parts.append(f"{key}: {val.strip()[-500:]}")
            break
    if not parts and isinstance(res.get("results"), list):
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                parts.append(str(item.get("msg") or "an item failed"))
                break
    return " | ".join(parts) or "failed"


def _render_diff(d: Any) -> str:
    """Render one ansible diff dict (before/after or prepared) as unified diff text."""
    if isinstance(d, str):
        return d
    if not isinstance(d, dict):
        return ""
    if d.get("prepared"):
        return str(d["prepared"])
    if "before" not in d and "after" not in d:
        return ""

    def lines(v: Any) -> list[str]:
        if v is None:
            return []
        if isinstance(v, dict):
            return [f"{k}: {json.dumps(val, default=str)}\n" for k, val in v.items()]
        text = str(v)
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        return out

    before, after = lines(d.get("before")), lines(d.get("after"))
    if before == after:
        return ""
    return "".join(
        difflib.unified_diff(
            before,
            after,
            fromfile=str(d.get("before_header") or "before"),
            tofile=str(d.get("after_header") or "after"),
        )
    )
