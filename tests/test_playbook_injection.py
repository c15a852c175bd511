"""The playbook catalog is the security boundary: no variable value may become shell syntax.

Three walls, each tested on its own:

1. A static rule over every shipped playbook: a ``shell``/``command``/``raw``/``script``
   task never holds Jinja (``{{ }}``) in its script text; values reach scripts only
   through ``environment:`` (or a ``command`` task's ``argv`` list).
2. Validation refuses shell metacharacters and control characters in path variables, and
   every injection string in every string/path variable of every playbook is refused or
   harmless (a property test over many strings, no ansible needed).
3. The playbooks themselves: with validation relaxed to "any string" for the variable
   under test, real ansible runs each playbook with injection strings in check mode and
   in real mode, and no marker file ever appears.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsmcp.backends import ansible as backend
from opsmcp.backends.ansible import VarSpec, load_catalog, run_playbook, validate_vars
from opsmcp.catalog import packaged_catalog
from opsmcp.errors import InvalidInput

CATALOG = packaged_catalog()
SHELL_MODULES = {"shell", "command", "raw", "script", "ansible.builtin.shell", "ansible.builtin.command",
                 "ansible.builtin.raw", "ansible.builtin.script", "ansible.legacy.shell", "ansible.legacy.command"}


def _tasks(node: Any) -> list[dict[str, Any]]:
    """Every task in a parsed playbook, blocks and handlers included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += _tasks(item)
    elif isinstance(node, dict):
        if any(k in node for k in SHELL_MODULES) or ("name" in node and any(
                k in node for k in ("tasks", "block", "rescue", "always", "handlers", "pre_tasks", "post_tasks"))):
            found.append(node)
        for key in ("tasks", "block", "rescue", "always", "handlers", "pre_tasks", "post_tasks"):
            if key in node:
                found += _tasks(node[key])
    return found


def _script_text(task: dict[str, Any]) -> list[str]:
    """The shell text of a task: the free-form string or ``cmd``; ``argv`` lists are safe."""
    texts = []
    for key in SHELL_MODULES & task.keys():
        body = task[key]
        if isinstance(body, str):
            texts.append(body)
        elif isinstance(body, dict) and isinstance(body.get("cmd"), str):
            texts.append(body["cmd"])
        args = task.get("args")
        if isinstance(args, dict) and isinstance(args.get("cmd"), str):
            texts.append(args["cmd"])
    return texts


def _playbook_files() -> list[Path]:
    catalog = load_catalog(CATALOG)
    return [entry.file for entry in catalog.playbooks]


@pytest.mark.parametrize("path", _playbook_files(), ids=lambda p: p.name)
def test_no_jinja_inside_shell_text(path: Path) -> None:
    tasks = _tasks(yaml.safe_load(path.read_text()))
    shell_tasks = [t for t in tasks if SHELL_MODULES & t.keys()]
    for task in shell_tasks:
        for text in _script_text(task):
            assert "{{" not in text and "{%" not in text, (
                f"{path.name}: task {task.get('name')!r} interpolates a variable into shell text; "
                "pass it through `environment:` and use \"$VAR\" instead")


def test_the_lint_catches_the_old_pattern(tmp_path: Path) -> None:
    """The static rule fails on the pattern that was exploitable (a sanity check of the lint)."""
    bad = [{"hosts": "all", "tasks": [{"name": "t", "ansible.builtin.shell": 'echo "x {{ log_file }}"'}]}]
    texts = [t for task in _tasks(bad) for t in _script_text(task)]
    assert texts and "{{" in texts[0]


INJECTIONS = [
    "$(touch {m})", "`touch {m}`", "; touch {m}", "| touch {m}", "&& touch {m}", "\ntouch {m}",
    "' ; touch {m} ; '", '" ; touch {m} ; "', "$(touch${{IFS}}{m})", "|| touch {m} #",
]


def _string_vars(catalog: backend.Catalog) -> list[tuple[str, str]]:
    return [(e.name, var) for e in catalog.playbooks for var, spec in e.vars.items()
            if spec.type in ("string", "path")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validation_refuses_shell_syntax_in_every_string_variable(data: st.DataObject, tmp_path_factory) -> None:
    """Every string/path variable of every playbook refuses values carrying shell syntax."""
    catalog = load_catalog(CATALOG)
    name, var = data.draw(st.sampled_from(_string_vars(catalog)))
    entry = catalog.get(name)
    prefix = data.draw(st.sampled_from(["/tmp/x", "/tmp/", "/var/tmp/a", "", "ERROR"]))
    inj = data.draw(st.sampled_from(INJECTIONS)).format(m="/tmp/MARK")
    filler = data.draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=8))
    value = prefix + filler + inj
    base = _valid_vars(entry, Path("/tmp"))
    with pytest.raises(InvalidInput):
        validate_vars(entry, {**base, var: value})


def _valid_vars(entry: backend.PlaybookEntry, root: Path) -> dict[str, Any]:
    """Valid values for the required variables of ``entry`` (files under ``root``)."""
    values: dict[str, Any] = {}
    for var, spec in entry.vars.items():
        if spec.enum:
            values[var] = spec.enum[0]
        elif spec.type == "path":
            values[var] = str(root / ("w.pid" if var == "pid_file" else "app.log" if "file" in var else ""))
    return values


def _relaxed(entry: backend.PlaybookEntry, var: str, root: Path) -> backend.PlaybookEntry:
    """``entry`` with ``var`` turned into an unconstrained string (validation out of the way),
    so the playbook itself is what stands between the value and a shell."""
    vars_ = dict(entry.vars)
    old = vars_[var]
    vars_[var] = VarSpec(type="string", description=old.description, required=old.required)
    return entry.model_copy(update={"vars": vars_, "allowed_roots": [*entry.allowed_roots, str(root)]})


def _cases() -> list[tuple[str, str]]:
    return _string_vars(load_catalog(CATALOG))


@pytest.mark.parametrize("check", [True, False], ids=["check", "real"])
@pytest.mark.parametrize(("name", "var"), _cases(), ids=lambda v: str(v))
def test_playbooks_never_run_injected_shell(name: str, var: str, check: bool, tmp_path: Path) -> None:
    """Real ansible, every string variable, check and real mode: no injected command runs.

    The value carries every injection form at once (command substitution, backticks, ``;``,
    ``|``, ``&&``, quotes); validation is relaxed for that variable so the value reaches the
    playbook. A marker file appearing anywhere means a shell evaluated the value.
    """
    catalog = load_catalog(CATALOG)
    entry = _relaxed(catalog.get(name), var, tmp_path)
    (tmp_path / "app.log").write_text("ERROR one\n")
    markers = [tmp_path / f"MARK{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    value = (f"{tmp_path}/x$(touch {markers[0]})`touch {markers[1]}`;touch {markers[2]}|touch {markers[3]}"
             f"&&touch {markers[4]}' ; touch {markers[5]} ; '\" ; touch {markers[5]} ; \"")
    vars_ = {**_valid_vars(entry, tmp_path), var: value}
    run = run_playbook(entry, vars_, check=check, timeout_seconds=120)
    assert run.status in ("successful", "failed"), run.stdout_tail
    assert not [m for m in markers if m.exists()], f"injected command ran: {run.stdout_tail}"
