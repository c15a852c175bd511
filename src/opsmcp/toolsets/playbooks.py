"""Playbooks toolset: list the catalog and run an entry (check mode by default).

Only playbooks named in the catalog (``settings.playbook_catalog``) can run, with variables
the catalog allows, against the inventory opsmcp builds (localhost). The backend
(:mod:`opsmcp.backends.ansible`) does the work in a worker thread; this module bridges it
to async code: cancellation of the calling task stops the run, and task progress is
forwarded to an optional ``progress`` callback.

Write safety, in two layers:

* the server's choke point registers ``run_playbook`` only when writes are enabled, asks
  the user to confirm a real run (elicitation or an explicit ``confirm``), and audits it;
* this toolset still refuses a real run (``check=False``) of any playbook whose risk is
  not ``read`` unless it is called with ``confirmed=True``. The server injects
  ``confirmed`` (and ``progress``) into :meth:`PlaybookTools.run_playbook`; neither is part
  of the tool's input schema, and ``confirmed`` is true only for a run the user approved.
  Previews (``check=True``) need no confirmation; ``PlaybookRunResult.preview_text()``
  is the text an approval prompt shows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import BaseModel, Field

from opsmcp.backends import ansible as backend
from opsmcp.backends.ansible import TaskEvent
from opsmcp.backends.ansible.reader import CatalogReader
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, WritesDisabled
from opsmcp.result_size import fit_result, json_size
from opsmcp.results import OutsideText, Result, WriteResult, untrusted
from opsmcp.toolsets.base import tool

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float | None, str], Coroutine[Any, Any, None]]


class PlaybookInfo(BaseModel):
    """One runnable playbook, as the catalog declares it."""

    name: str = Field(description="Name to pass to run_playbook.")
    description: str = Field(description="What the playbook does.")
    risk: str = Field(description="read (changes nothing), change, or destructive (deletes data).")
    targets: list[str] = Field(description="Values accepted as `limit`.")
    allowed_roots: list[str] = Field(description="Directories every path variable must lie under.")
    vars: dict[str, backend.VarSpec] = Field(description="Variables accepted in `extra_vars`, by name.")


class PlaybookList(Result):
    """The playbooks run_playbook may run."""

    playbooks: list[PlaybookInfo] = Field(description="Every catalog entry, in catalog order.")


class PlaybookRunResult(OutsideText, WriteResult, backend.PlaybookRun):
    """Outcome of one playbook run; in check mode nothing was changed. The fields are the
    backend's :class:`~opsmcp.backends.ansible.PlaybookRun` plus the result envelope."""

    status: Literal["successful", "failed", "timeout", "canceled", "pending_approval"] = Field(  # type: ignore[assignment]
        description="successful, failed, timeout or canceled; pending_approval: a real run waiting for a person's "
        "approval (OPSMCP_WRITE_APPROVAL=human), the fields show its check-mode preview.")

    untrusted: list[str] = untrusted("message", "tasks[].message", "tasks[].output", "diffs[]", "stdout_tail")

    def preview_text(self, limit: int = 2_000) -> str:
        """A short, deterministic summary for approval prompts: what ran (or would), what
        changed (or would), the plan messages and the diffs; at most ``limit`` characters."""
        mode = "Check-mode preview" if self.check else "Run"
        lines = [f"{mode} of playbook {self.name!r}: {self.status}, {self.changed} task(s) "
                 + ("would change something." if self.check else "changed something.")]
        if self.failed_task:
            lines.append(f"Failed task: {self.failed_task!r}: {self.message or ''}".rstrip(": "))
        changed = [t.task for t in self.tasks if t.status == "changed"]
        if changed:
            lines.append("Changing tasks: " + "; ".join(dict.fromkeys(changed)))
        for t in self.tasks:
            if t.output and t.status != "skipped":
                lines.append(f"{t.task}: {t.output[:400]}")
        for d in self.diffs:
            lines.append(f"--- diff of {d.task!r}:\n{d.diff[:400]}")
        text = "\n".join(lines)
        return text if len(text) <= limit else text[: limit - 15] + " ...[truncated]"


class PlaybookTools:
    """The ``playbooks`` toolset.

    Args:
        settings: ``playbook_timeout_seconds`` and ``max_result_bytes``.
        catalog: the catalog reader (built by the composition root and shared with the
            playbook resources); default: a reader of ``settings.playbook_catalog``.
    """

    def __init__(self, settings: Settings, catalog: CatalogReader | None = None) -> None:
        self.settings = settings
        self._reader = catalog or CatalogReader(settings.playbook_catalog)

    # ------------------------------------------------------------------ catalog

    def catalog(self) -> backend.Catalog:
        """The loaded catalog, reloaded when its file's mtime changes.

        Raises:
            OpsError: the catalog file is missing or invalid (names the file).
        """
        return self._reader()

    def check(self) -> None:
        """Start-up check for the server and ``opsmcp doctor``: the catalog loads and
        ``ansible-playbook`` is installed.

        Raises:
            OpsError: catalog missing/invalid (names the file), or ansible not found (with
                the install command).
        """
        self.catalog()
        backend.check_ansible_available()

    # ------------------------------------------------------------------ tools

    @tool(title="List playbooks", read_only=True, destructive=False, idempotent=True, open_world=False)
    async def list_playbooks(self) -> PlaybookList:
        """The playbooks run_playbook can run: name, what it does, risk, and the variables
        each accepts."""
        out = [
            PlaybookInfo(name=e.name, description=e.description, risk=e.risk, targets=e.targets,
                         allowed_roots=e.allowed_roots, vars=e.vars)
            for e in self.catalog().playbooks
        ]
        return PlaybookList(playbooks=out)

    @tool(
        title="Run a playbook",
        write=True,
        read_only=False,
        destructive=True,
        idempotent=False,
        open_world=True,
        preview_arg="check",
    )
    async def run_playbook(
        self,
        name: Annotated[str, Field(description="Playbook name from list_playbooks, e.g. 'collect_diagnostics'.")],
        extra_vars: Annotated[
            dict[str, str | int | bool] | None,
            Field(description="Variables for the playbook, as listed by list_playbooks, e.g. {\"age_days\": 7}."),
        ] = None,
        check: Annotated[
            bool,
            Field(description="True (default): dry run with --check --diff, changes nothing. False: run for real."),
        ] = True,
        limit: Annotated[
            str | None, Field(description="Host to run on, one of the playbook's targets; default all of them.")
        ] = None,
        progress: ProgressFn | None = None,
        confirmed: bool = False,
    ) -> PlaybookRunResult:
        """Run a catalog playbook on localhost. Defaults to check mode (dry run): preview the
        tasks and diffs first, then run with check=false to apply. Returns per-task status,
        diffs, the recap and the failed task, if any."""
        # ``progress`` and ``confirmed`` are injected by the server (never part of the input
        # schema): ``confirmed`` is true only for a real run the user approved.
        return await self.execute(name, extra_vars, check, limit, confirmed=confirmed, progress=progress)

    # ------------------------------------------------------------------ plain API

    async def execute(
        self,
        name: str,
        extra_vars: dict[str, Any] | None = None,
        check: bool = True,
        limit: str | None = None,
        *,
        confirmed: bool = False,
        progress: ProgressFn | None = None,
    ) -> PlaybookRunResult:
        """Validate, then run playbook ``name`` in a worker thread; the server's entry point.

        Args:
            name: catalog entry name.
            extra_vars: variable name -> value (strings accepted for integers/booleans).
            check: True for a dry run (``--check --diff``); False to apply.
            limit: one of the entry's targets, or None.
            confirmed: the server sets True after the user confirmed a real run; without
                it a real run of a ``change``/``destructive`` playbook is refused.
            progress: awaited as ``progress(done, total, message)`` at each task start and
                end (``total`` is an estimate or None); values only increase. Failures in
                it are logged and ignored.

        Returns:
            A :class:`PlaybookRunResult` fitted to ``settings.max_result_bytes``.

        Raises:
            NotFound: unknown playbook (hint: closest names).
            InvalidInput: bad variables or limit; nothing ran.
            WritesDisabled: real run of a non-read playbook without ``confirmed``.
            OpsError: catalog invalid or ansible not installed.
            Cancellation: when the calling task is cancelled the run is killed (within
                ~0.2 s) and the cancellation propagates.
        """
        entry = self.catalog().get(name)
        clean = backend.validate_vars(entry, extra_vars)
        if limit is not None and limit not in entry.targets:
            raise InvalidInput(
                f"limit {limit!r} is not a target of playbook {name!r}.",
                "use one of " + ", ".join(repr(t) for t in entry.targets) + " or omit limit.",
            )
        if not check and entry.risk != "read" and not confirmed:
            raise WritesDisabled(
                f"A real run (check=false) of playbook {name!r} ({entry.risk}) needs confirmation.",
                "run it with check=true to preview the changes; a real run needs the operator's approval.",
            )

        cancel_event = threading.Event()
        on_event = self._progress_bridge(progress, cancel_event) if progress is not None else None
        timeout = self.settings.playbook_timeout_seconds

        def work() -> backend.PlaybookRun:
            return backend.run_playbook(
                entry,
                clean,
                check=check,
                limit=limit,
                timeout_seconds=timeout,
                on_event=on_event,
                cancel_event=cancel_event,
            )

        try:
            run = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        finally:
            # On cancellation the thread is abandoned while the playbook still runs:
            # setting the event makes ansible-runner kill it (no-op after a normal end).
            cancel_event.set()
        return _fit(_to_result(run), self.settings.max_result_bytes)

    @staticmethod
    def _progress_bridge(progress: ProgressFn, cancel_event: threading.Event) -> Callable[[TaskEvent], None]:
        """Build the ``on_event`` callback that forwards task events from the worker thread
        to ``progress`` on the event loop (``anyio.from_thread.run``)."""
        last = -1.0

        def on_event(ev: TaskEvent) -> None:
            nonlocal last
            if cancel_event.is_set():
                return
            if ev.kind == "task_start":
                done, msg = ev.index - 0.5, f"task {ev.index}: {ev.task}"
            else:
                done, msg = float(ev.index), f"{ev.task}: {ev.status} on {ev.host}"
            if done <= last:
                return
            last = done
            total = float(ev.total) if ev.total is not None else None
            try:
                anyio.from_thread.run(progress, done, total, msg)
            except Exception:
                log.debug("progress callback failed", exc_info=True)

        return on_event


def _to_result(run: backend.PlaybookRun) -> PlaybookRunResult:
    notes: list[str] = []
    if run.check:
        notes.append(
            f"Check mode: nothing was changed. {run.changed} task(s) would change something; "
            "commands that do not support check mode were skipped."
        )
    if run.tasks_truncated:
        notes.append(f"Only the first {backend.MAX_TASKS} task results are listed.")
    if run.diffs_truncated:
        notes.append(f"Diffs were cut: at most {backend.MAX_DIFFS} diffs of {backend.MAX_DIFF_BYTES} bytes each.")
    if run.stdout_truncated:
        notes.append("stdout_tail holds only the last lines of the output.")
    return PlaybookRunResult(
        **run.model_dump(),
        truncated=run.tasks_truncated or run.diffs_truncated or run.stdout_truncated,
        notes=notes,
    )


def _fit(result: PlaybookRunResult, budget: int) -> PlaybookRunResult:
    """Shrink ``result`` to at most ``budget`` bytes of JSON with
    :func:`~opsmcp.result_size.fit_result` and these steps, in order, while it is too large:
    the stdout tail (to its last 1,000 characters), diffs from the end, debug outputs (to 300
    characters), task results from the end (at least one is kept). Each cut sets ``truncated``
    and the matching ``*_truncated`` flag and says so in ``notes``."""

    def over() -> bool:
        return json_size(result) > budget

    def stdout(r: PlaybookRunResult) -> str | None:
        if len(r.stdout_tail) <= 1_000:
            return None
        r.stdout_tail, r.stdout_truncated = r.stdout_tail[-1_000:], True
        return "stdout_tail was cut to fit the result size budget."

    def diffs(r: PlaybookRunResult) -> str | None:
        dropped = 0
        while r.diffs and over():
            r.diffs.pop()
            dropped += 1
        if not dropped:
            return None
        r.diffs_truncated = True
        return f"{dropped} diff(s) were dropped to fit the result size budget."

    def outputs(r: PlaybookRunResult) -> str:
        for t in r.tasks:
            if t.output and len(t.output) > 300:
                t.output = t.output[:300] + " ...[truncated]"
        return "Debug outputs were cut to fit the result size budget."

    def tasks(r: PlaybookRunResult) -> str | None:
        kept = len(r.tasks)  # room for the note this step adds after its cut
        reserve = len(f"Only the first {kept} of {kept} task results fit the size budget.".encode()) + 3
        while len(r.tasks) > 1 and json_size(r) + reserve > budget:
            r.tasks.pop()
        if len(r.tasks) == kept:
            return None
        r.tasks_truncated = True
        return f"Only the first {len(r.tasks)} of {kept} task results fit the size budget."

    return fit_result(result, budget, steps=(stdout, diffs, outputs, tasks))
