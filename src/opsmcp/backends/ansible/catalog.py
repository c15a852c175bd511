"""The playbook catalog and variable validation: the security boundary of ``run_playbook``.

What may run is decided here, never by the caller. :func:`load_catalog` reads the catalog
YAML (the shipped ``opsmcp/catalog/catalog.yml`` or ``OPSMCP_PLAYBOOK_CATALOG``); a caller
picks an entry by name (:meth:`Catalog.get`) and passes variables, which
:func:`validate_vars` checks against the entry before anything runs:

* only declared variables, each of its declared type, enum, pattern and min/max;
* no ``@file`` values and no Jinja (``{{``, ``{%``, ``{#``), no control characters;
* paths absolute, without ``..``, without shell metacharacters, and inside the entry's
  ``allowed_roots`` once symlinks are resolved.

Playbooks never put a value into shell text (values reach scripts through
``environment:``; ``tests/test_playbook_injection.py`` enforces it), so validation is the
second wall, not the only one. Resolving a path here does not keep it safe until the run:
the shipped playbooks touch files only through the catalog's modules
(``opsmcp/catalog/playbooks/library``), which refuse links planted after validation and
never write through a derived name (``tests/test_playbook_write_safety.py``). This module
knows nothing of ansible-runner or MCP.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from opsmcp.errors import InvalidInput, OpsError, not_found

VarType = Literal["string", "integer", "boolean", "path"]
Risk = Literal["read", "change", "destructive"]

#: libyaml's safe loader when PyYAML was built with it (the wheels are): the catalog is read
#: at every server start, and the C loader parses it ~10x faster than the pure-Python one.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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
    """One variable a catalog entry accepts (see ``opsmcp/catalog/catalog.yml``)."""

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
        parts: list[str] = [self.type]
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
        raw = yaml.load(text, Loader=SAFE_LOADER) or {}
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
