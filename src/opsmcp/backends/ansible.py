"""Thin adapter over ansible-runner: the playbook catalog, variable validation, and runs.

What may run is decided by the catalog (``tools/catalog.yml``, see
:func:`load_catalog`), never by the caller: the caller picks a catalog entry by name and
passes variables, which :func:`validate_vars` checks against the entry before anything
runs. :func:`run_playbook` runs one entry with ansible-runner (the library, not a
subprocess we spawn ourselves) in a fresh private data dir with an inventory we build
(``localhost``, connection local), and returns a bounded :class:`PlaybookRun`.

This module knows nothing of MCP or of toolsets; it raises :class:`~opsmcp.errors.OpsError`
subclasses for everything it anticipates.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from opsmcp.errors import InvalidInput, OpsError, not_found

log = logging.getLogger(__name__)

VarType = Literal["string", "integer", "boolean", "path"]
Risk = Literal["read", "change", "destructive"]
RunStatus = Literal["successful", "failed", "timeout", "canceled"]
TaskStatus = Literal["ok", "changed", "failed", "skipped", "unreachable"]

# Bounds of one PlaybookRun.
MAX_DIFFS = 20
MAX_DIFF_BYTES = 4_096
MAX_TASKS = 200
MAX_MESSAGE_CHARS = 1_000
MAX_OUTPUT_CHARS = 4_000
STDOUT_TAIL_LINES = 60
STDOUT_TAIL_BYTES = 8_192
# How often ansible-runner's loop polls the cancel callback and the timeout, seconds.
POLL_SECONDS = 0.2
# Environment variable carrying a per-run id into every process of the run, so processes
# that escaped ansible-playbook's process group (ansible workers call setsid) can be
# found and killed after a timeout or cancel. Playbooks that start long-lived processes
# on purpose (restart_worker) unset it for them.
RUN_MARKER_ENV = "OPSMCP_RUN_ID"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_JINJA_MARKERS = ("{{", "{%", "{#")
#: Characters a path variable may not hold: shell syntax (command substitution, quoting,
#: separators, redirection, globbing, history, comments) and whitespace other than a plain
#: space. Playbooks never interpolate values into shell text (they pass them through
#: ``environment:``), so this is a second wall, not the only one.
_PATH_FORBIDDEN = frozenset("$`'\"\\;|&<>(){}[]*?!~#\t")
_INT_RE = re.compile(r"^[+-]?\d+$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


# --------------------------------------------------------------------------- catalog


class VarSpec(BaseModel):
    """One variable a catalog entry accepts (see ``tools/catalog.yml``)."""

    model_config = ConfigDict(extra="forbid")

    type: VarType = Field("string", description="string, integer, boolean or path.")
    description: str = Field("", description="What the variable means.")
    required: bool = Field(False, description="The caller must give it (no default).")
    default: Any = Field(None, description="Filled in when the caller omits the variable.")
    enum: list[Any] | None = Field(None, description="Allowed values.")
    pattern: str | None = Field(None, description="Regex the whole value must match (string, path).")
    min: int | None = Field(None, description="Smallest allowed integer.")
    max: int | None = Field(None, description="Largest allowed integer.")

    @model_validator(mode="after")
    def _consistent(self) -> VarSpec:
        if self.pattern is not None:
            if self.type not in ("string", "path"):
                raise ValueError("pattern applies only to string and path variables")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from exc
        if (self.min is not None or self.max is not None) and self.type != "integer":
            raise ValueError("min/max apply only to integer variables")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.required and self.default is not None:
            raise ValueError("a required variable cannot have a default")
        if self.enum is not None and not self.enum:
            raise ValueError("enum must list at least one value")
        return self

    def describe(self) -> str:
        """A short human description of what is allowed, e.g. ``integer 1..200, default 20``."""
        parts = [self.type]
        if self.enum is not None:
            parts.append("one of " + ", ".join(repr(v) for v in self.enum))
        if self.pattern is not None:
            parts.append(f"matching {self.pattern!r}")
        if self.min is not None or self.max is not None:
            lo = "" if self.min is None else str(self.min)
            hi = "" if self.max is None else str(self.max)
            parts.append(f"{lo}..{hi}")
        if self.required:
            parts.append("required")
        elif self.default is not None:
            parts.append(f"default {self.default!r}")
        else:
            parts.append("optional")
        return parts[0] + ", " + ", ".join(parts[1:])


class PlaybookEntry(BaseModel):
    """One runnable playbook of the catalog. ``file`` is absolute after loading."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name callers use, lowercase with underscores.")
    file: Path = Field(description="Playbook path; relative to the catalog's directory in the YAML.")
    description: str = Field(description="What the playbook does.")
    risk: Risk = Field(description="read (changes nothing), change, or destructive (deletes data).")
    targets: list[str] = Field(default_factory=list, description="Hosts/groups a caller may pass as limit.")
    allowed_roots: list[str] = Field(default_factory=list, description="Directories path variables must lie under.")
    vars: dict[str, VarSpec] = Field(default_factory=dict, description="Variables the playbook accepts.")

    @model_validator(mode="after")
    def _check(self) -> PlaybookEntry:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"playbook name {self.name!r} must match {_NAME_RE.pattern}")
        for var in self.vars:
            if not _NAME_RE.match(var) or var.startswith(("ansible_", "omit")):
                raise ValueError(
                    f"variable name {var!r} of {self.name!r} must match {_NAME_RE.pattern} and not be an ansible_ name"
                )
        for root in self.allowed_roots:
            if not os.path.isabs(root):
                raise ValueError(f"allowed root {root!r} of {self.name!r} must be absolute")
        if not self.targets:
            raise ValueError(f"playbook {self.name!r} has no targets")
        return self


class Catalog(BaseModel):
    """The loaded catalog: every playbook run_playbook may run."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="The catalog file it was loaded from.")
    playbooks: list[PlaybookEntry] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Names of all entries, in catalog order."""
        return [p.name for p in self.playbooks]

    def get(self, name: str) -> PlaybookEntry:
        """Return the entry called ``name``.

        Raises:
            NotFound: no such entry; the hint lists the closest names (or says to call
                ``list_playbooks``).
        """
        for entry in self.playbooks:
            if entry.name == name:
                return entry
        raise not_found("playbook", name, self.names, "list_playbooks")


class _CatalogDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[str] = Field(default_factory=lambda: ["localhost"])
    allowed_roots: list[str] = Field(default_factory=list)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    defaults: _CatalogDefaults = Field(default_factory=_CatalogDefaults)
    playbooks: list[dict[str, Any]] = Field(default_factory=list)


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Load and check the playbook catalog YAML at ``path``.

    The file has ``version``, optional ``defaults`` (``targets``, ``allowed_roots``, which
    entries inherit unless they set their own) and ``playbooks``: a list of entries with
    ``name``, ``file`` (relative to the catalog's directory), ``description``, ``risk``,
    ``targets``, ``allowed_roots`` and ``vars`` (name -> :class:`VarSpec`). Each playbook
    file must exist, names must be unique, and every default must pass its own spec.

    Raises:
        OpsError: the file is missing, is not valid YAML, or does not describe a valid
            catalog; the message names the file and the offending entry.
    """
    cat_path = Path(path).expanduser().resolve()
    hint = "fix the catalog file or point OPSMCP_PLAYBOOK_CATALOG at a valid one."
    try:
        text = cat_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OpsError(f"Playbook catalog {cat_path} does not exist.", hint) from None
    except OSError as exc:
        raise OpsError(f"Playbook catalog {cat_path} cannot be read: {exc.strerror}.", hint) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise OpsError(f"Playbook catalog {cat_path} is not valid YAML: {exc}", hint) from None
    if not isinstance(raw, dict):
        raise OpsError(f"Playbook catalog {cat_path} must be a mapping with a 'playbooks' list.", hint)
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as exc:
        raise OpsError(f"Playbook catalog {cat_path} is invalid: {_first_error(exc)}", hint) from None

    entries: list[PlaybookEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(parsed.playbooks):
        label = f"entry {i + 1}" + (f" ({item.get('name')!r})" if isinstance(item, dict) and item.get("name") else "")
        data = {"targets": parsed.defaults.targets, "allowed_roots": parsed.defaults.allowed_roots, **item}
        try:
            entry = PlaybookEntry.model_validate(data)
        except ValidationError as exc:
            raise OpsError(f"Playbook catalog {cat_path}, {label} is invalid: {_first_error(exc)}", hint) from None
        file = entry.file if entry.file.is_absolute() else cat_path.parent / entry.file
        file = file.resolve()
        if not file.is_file():
            raise OpsError(f"Playbook catalog {cat_path}, {label}: playbook file {file} does not exist.", hint)
        if entry.name in seen:
            raise OpsError(f"Playbook catalog {cat_path}: playbook name {entry.name!r} appears twice.", hint)
        seen.add(entry.name)
        entry = entry.model_copy(update={"file": file})
        for var, spec in entry.vars.items():
            values = ([spec.default] if spec.default is not None else []) + list(spec.enum or [])
            for value in values:
                try:
                    _check_value(entry, var, spec, value)
                except InvalidInput as exc:
                    raise OpsError(
                        f"Playbook catalog {cat_path}, {label}: default/enum of {var!r} is invalid: {exc.message}", hint
                    ) from None
        entries.append(entry)
    return Catalog(path=cat_path, playbooks=entries)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))


# --------------------------------------------------------------------------- validation


def validate_vars(entry: PlaybookEntry, extra_vars: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``extra_vars`` against ``entry``'s variable specs and return the vars to run with.

    Args:
        entry: the catalog entry (from :meth:`Catalog.get`).
        extra_vars: variable name -> value as the caller sent it, or None. Strings are
            accepted for integers (``"42"``) and booleans (``"true"``/``"false"``,
            ``"yes"``/``"no"``); None counts as omitted.

    Returns:
        A new dict with coerced values, defaults filled in, and ``path`` values replaced
        by their resolved (symlink-free) absolute form. Validating the result again
        returns it unchanged.

    Raises:
        InvalidInput: an unknown variable, a wrong type, a value outside its enum,
            pattern or min/max, a missing required variable, a path that is relative,
            contains ``..`` or resolves outside the entry's ``allowed_roots``, a value
            starting with ``@``, or a value containing Jinja (``{{``, ``{%``, ``{#``).
            The message names the variable and what is allowed.
    """
    if extra_vars is None:
        extra_vars = {}
    if not isinstance(extra_vars, Mapping):
        raise InvalidInput(
            f"extra_vars for playbook {entry.name!r} must be an object of variable name to value.",
            _allowed_hint(entry),
        )
    unknown = [k for k in extra_vars if k not in entry.vars]
    if unknown:
        raise InvalidInput(
            f"Playbook {entry.name!r} has no variable {unknown[0]!r}.",
            _allowed_hint(entry),
        )
    out: dict[str, Any] = {}
    for var, spec in entry.vars.items():
        value = extra_vars.get(var)
        if value is None:
            if spec.required:
                raise InvalidInput(
                    f"Playbook {entry.name!r} needs variable {var!r} ({spec.describe()}).",
                    f"pass extra_vars={{{var!r}: ...}}; {spec.description}".rstrip("; "),
                )
            if spec.default is None:
                continue
            value = spec.default
        out[var] = _check_value(entry, var, spec, value)
    return out


def _allowed_hint(entry: PlaybookEntry) -> str:
    if not entry.vars:
        return f"playbook {entry.name!r} takes no variables; pass extra_vars={{}}."
    return "allowed variables: " + "; ".join(f"{k} ({s.describe()})" for k, s in entry.vars.items())


def _check_value(entry: PlaybookEntry, var: str, spec: VarSpec, value: Any) -> Any:
    """Coerce and check one value; raise InvalidInput naming ``var`` and what is allowed."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(
            f"Variable {var!r} of playbook {entry.name!r} {why}; got {_show(value)}.",
            f"{var} must be {spec.describe()}." + (f" {spec.description}" if spec.description else ""),
        )

    if isinstance(value, str):
        if value.lstrip().startswith("@"):
            raise bad("must not start with '@' (no @file variables)")
        if any(m in value for m in _JINJA_MARKERS):
            raise bad("must not contain Jinja ('{{', '{%' or '{#')")
        if any(ord(c) < 32 and c != "\t" for c in value):
            raise bad("must not contain control characters or newlines")

    result: Any
    if spec.type == "integer":
        if isinstance(value, bool):
            raise bad("must be an integer")
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str) and _INT_RE.match(value.strip()):
            result = int(value.strip())
        else:
            raise bad("must be an integer")
        if spec.min is not None and result < spec.min:
            raise bad(f"must be at least {spec.min}")
        if spec.max is not None and result > spec.max:
            raise bad(f"must be at most {spec.max}")
    elif spec.type == "boolean":
        if isinstance(value, bool):
            result = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            result = value.strip().lower() in _TRUE
        else:
            raise bad("must be a boolean (true or false)")
    elif spec.type == "string":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise bad("must be a string")
        result = str(value)
        if spec.pattern is not None and not re.fullmatch(spec.pattern, result):
            raise bad(f"must match {spec.pattern!r}")
    else:  # path
        result = _check_path(entry, value, bad)
        if spec.pattern is not None and not re.fullmatch(spec.pattern, result):
            raise bad(f"must match {spec.pattern!r}")

    if spec.enum is not None and result not in spec.enum:
        raise bad("must be one of " + ", ".join(repr(v) for v in spec.enum))
    return result


def _check_path(entry: PlaybookEntry, value: Any, bad: Callable[[str], InvalidInput]) -> str:
    if not isinstance(value, str) or not value:
        raise bad("must be an absolute path")
    if not os.path.isabs(value):
        raise bad("must be an absolute path")
    if ".." in Path(value).parts:
        raise bad("must not contain '..'")
    shell = sorted({c for c in value if c in _PATH_FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if shell:
        raise bad("must not contain shell metacharacters or control characters (found "
                  + " ".join(repr(c) for c in shell) + ")")
    resolved = os.path.realpath(value)
    roots = [os.path.realpath(r) for r in entry.allowed_roots]
    for root in roots:
        if resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep):
            return resolved
    where = f" (resolves to {resolved})" if resolved != value else ""
    raise bad(f"must lie under one of {', '.join(entry.allowed_roots) or '(no allowed roots)'}{where}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- run results


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

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


class FileDiff(BaseModel):
    """A --diff output of one task (what changed, or would change in check mode)."""

    task: str = Field(description="Task that produced it.")
    host: str = Field(description="Host.")
    diff: str = Field(description="Unified diff text.")
    truncated: bool = Field(False, description="The diff was cut to the size bound.")


class PlaybookRun(BaseModel):
    """The bounded outcome of one playbook run."""

    name: str = Field(description="Catalog name of the playbook.")
    check: bool = Field(description="True for a check-mode (dry) run: nothing was changed.")
    status: RunStatus = Field(description="successful, failed, timeout or canceled.")
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

    @property
    def changed(self) -> int:
        """Total changed count over all hosts."""
        return sum(r.changed for r in self.recap.values())


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


# --------------------------------------------------------------------------- availability


def _run_path() -> str:
    """PATH for runs: the interpreter's bin dir (the venv's) first, then the inherited PATH."""
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and p != venv_bin]
    return os.pathsep.join([venv_bin, *rest])


def check_ansible_available() -> None:
    """Check that ``ansible-playbook`` and ansible-runner can be found; call at server start.

    Looks in the directory of the running interpreter (the venv's ``bin``) and on PATH,
    the same PATH :func:`run_playbook` gives its runs.

    Raises:
        OpsError: ``ansible-playbook`` is not found, or ``ansible_runner`` is not installed;
            the hint says how to install them.
    """
    hint = (
        f"install them into the Python environment that runs opsmcp ({sys.executable}): "
        "pip install 'opsmcp[playbooks]' (ansible-core, ansible-runner), or disable the playbooks toolset."
    )
    if shutil.which("ansible-playbook", path=_run_path()) is None:
        raise OpsError("ansible-playbook was not found next to the Python interpreter or on PATH.", hint)
    import importlib.util

    if importlib.util.find_spec("ansible_runner") is None:
        raise OpsError("The ansible_runner package is not installed.", hint)


# --------------------------------------------------------------------------- running


def run_playbook(
    entry: PlaybookEntry,
    vars: Mapping[str, Any] | None,
    *,
    check: bool,
    limit: str | None = None,
    timeout_seconds: float,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel_event: threading.Event | None = None,
) -> PlaybookRun:
    """Run one catalog entry with ansible-runner and wait for it; blocking.

    Args:
        entry: the catalog entry to run.
        vars: variables; validated again with :func:`validate_vars` (so unvalidated input
            never reaches ansible) and passed as extra vars.
        check: True adds ``--check --diff`` (nothing is changed); False runs for real,
            still with ``--diff``.
        limit: one of ``entry.targets``, or None for all of them.
        timeout_seconds: wall-clock limit, seconds; the run is killed when it is reached
            (ansible-runner counts whole seconds, so it is rounded up) and its status is
            ``timeout``.
        on_event: called (in this thread) at each task start and each task result per
            host; exceptions it raises are logged and ignored.
        cancel_event: when set, the run is killed within ~0.2 s and its status is
            ``canceled``.

    Returns:
        A :class:`PlaybookRun` built from ansible-runner's events: per-task results, the
        recap, diffs, a stdout tail and the first failed task. Failures inside the
        playbook are reported there (status ``failed``), not raised.

    Raises:
        InvalidInput: bad ``vars`` or a ``limit`` that is not one of the entry's targets.
        OpsError: ansible is not installed, or ansible-runner could not start.
    """
    clean_vars = validate_vars(entry, vars)
    if limit is not None and limit not in entry.targets:
        raise InvalidInput(
            f"limit {limit!r} is not a target of playbook {entry.name!r}.",
            "use one of " + ", ".join(repr(t) for t in entry.targets) + " or omit limit.",
        )
    if timeout_seconds <= 0:
        raise InvalidInput(f"timeout_seconds must be positive; got {timeout_seconds!r}.")
    check_ansible_available()
    import ansible_runner  # imported lazily: ~0.1 s, not needed at server start

    collector = _Collector(entry, on_event, _estimate_tasks(entry.file))
    cancel = cancel_event or threading.Event()
    run_id = uuid.uuid4().hex
    status = "error"  # until ansible-runner returns
    started = time.monotonic()
    pdd = tempfile.mkdtemp(prefix="opsmcp-playbook-")
    try:
        _prepare_data_dir(pdd)
        inventory = {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    }
                }
            }
        }
        inv_path = os.path.join(pdd, "inventory", "hosts.json")
        with open(inv_path, "w", encoding="utf-8") as fh:
            json.dump(inventory, fh)
        try:
            runner = ansible_runner.run(
                private_data_dir=pdd,
                project_dir=str(entry.file.parent),
                playbook=entry.file.name,
                inventory=inv_path,
                extravars=clean_vars,
                limit=limit or ":".join(entry.targets),
                cmdline="--check --diff" if check else "--diff",
                envvars={**_run_env(pdd), RUN_MARKER_ENV: run_id},
                settings={"pexpect_timeout": POLL_SECONDS},
                ident="run",
                quiet=True,
                timeout=max(1, math.ceil(timeout_seconds)),
                event_handler=collector.handle,
                cancel_callback=cancel.is_set,
            )
        except OpsError:
            raise
        except Exception as exc:  # ansible-runner configuration/start-up failures
            raise OpsError(
                f"ansible-runner could not run playbook {entry.name!r}: {exc}",
                "check the playbook file and the ansible installation (opsmcp doctor).",
            ) from exc
        stdout_tail, stdout_truncated = _tail(os.path.join(pdd, "artifacts", "run", "stdout"))
        status = runner.status if runner.status in ("successful", "failed", "timeout", "canceled") else "failed"
        rc = runner.rc
    finally:
        if status in ("timeout", "canceled", "error"):
            # ansible-runner killed ansible-playbook's process group only; ansible's
            # workers run in their own sessions, so their commands may still be running.
            _kill_marked(run_id)
        shutil.rmtree(pdd, ignore_errors=True)
    duration = round(time.monotonic() - started, 3)
    return collector.result(
        check=check,
        status=status,
        rc=rc,
        duration=duration,
        stdout_tail=stdout_tail,
        stdout_truncated=stdout_truncated,
        timeout_seconds=timeout_seconds,
    )


def _prepare_data_dir(pdd: str) -> None:
    for sub in ("inventory", "env", "tmp", "home"):
        os.makedirs(os.path.join(pdd, sub), mode=0o700, exist_ok=True)
    # An empty config so no ansible.cfg from the cwd or home is picked up.
    with open(os.path.join(pdd, "ansible.cfg"), "w", encoding="utf-8") as fh:
        fh.write("[defaults]\n")


def _run_env(pdd: str) -> dict[str, str]:
    return {
        "PATH": _run_path(),
        "ANSIBLE_CONFIG": os.path.join(pdd, "ansible.cfg"),
        "ANSIBLE_HOME": os.path.join(pdd, "home"),
        "ANSIBLE_LOCAL_TEMP": os.path.join(pdd, "tmp"),
        "ANSIBLE_REMOTE_TMP": os.path.join(pdd, "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_SYSTEM_WARNINGS": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_PIPELINING": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _kill_marked(run_id: str) -> int:
    """SIGKILL every process whose environment holds ``RUN_MARKER_ENV=run_id`` (Linux /proc;
    elsewhere a no-op). Repeats until none is left, so children forked meanwhile die too.
    Returns how many processes were signalled."""
    needle = f"{RUN_MARKER_ENV}={run_id}".encode()
    me = os.getpid()
    killed = 0
    for _ in range(10):
        try:
            names = os.listdir("/proc")
        except OSError:
            return killed
        found = []
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                continue
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.02)
    if killed:
        log.info("killed %d leftover process(es) of playbook run %s", killed, run_id)
    return killed


def _estimate_tasks(playbook: Path) -> int | None:
    """Count the tasks a playbook declares (blocks flattened; rescue not counted)."""

    def count(tasks: Any) -> int:
        n = 0
        for t in tasks or []:
            if isinstance(t, dict) and "block" in t:
                n += count(t.get("block")) + count(t.get("always"))
            elif isinstance(t, dict):
                n += 1
        return n

    try:
        plays = yaml.safe_load(playbook.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(plays, list):
        return None
    total = 0
    for play in plays:
        if not isinstance(play, dict):
            continue
        if play.get("gather_facts", True) not in (False, "false", "no"):
            total += 1
        for key in ("pre_tasks", "tasks", "post_tasks"):  # handlers run only when notified
            total += count(play.get(key))
    return total or None


def _tail(path: str) -> tuple[str, bool]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - STDOUT_TAIL_BYTES * 2))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "", False
    data = re.sub(r"\x1b\[[0-9;]*m", "", data).replace("\r\n", "\n")
    lines = data.rstrip("\n").split("\n")
    truncated = size > STDOUT_TAIL_BYTES * 2
    if len(lines) > STDOUT_TAIL_LINES:
        lines, truncated = lines[-STDOUT_TAIL_LINES:], True
    text = "\n".join(lines)
    if len(text.encode()) > STDOUT_TAIL_BYTES:
        text = text.encode()[-STDOUT_TAIL_BYTES:].decode("utf-8", errors="ignore")
        text, truncated = text[text.find("\n") + 1 :], True
    return text, truncated


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + " ...[truncated]"


class _Collector:
    """Builds a PlaybookRun from ansible-runner events (called in the runner's thread)."""

    _RESULT_EVENTS = {
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
            status=status,  # type: ignore[arg-type]
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
            status=status,  # type: ignore[arg-type]
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
            hosts = set()
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
