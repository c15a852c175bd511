"""Argument errors a model can act on, from the SDK's argument validation.

The SDK validates a tool call's arguments against the tool's input schema with pydantic
before the tool runs; its message is pydantic's text (``1 validation error for
find_ordersArguments ... https://errors.pydantic.dev/...``). :func:`explain` turns that
:class:`~pydantic.ValidationError` into one line per wrong argument: its name, what was wrong
with the value, what is allowed (range, length, values; read from the tool's input schema)
and an example call. The server (:class:`opsmcp.server.OpsServer`) applies it to every tool.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from opsmcp.errors import closest
from opsmcp.result_size import cut_text

_EXAMPLE = re.compile(r"e\.g\.\s*([`'\"])(.+?)\1")
_EXAMPLE_JSON = re.compile(r"e\.g\.\s*(\{[^{}]*\}|\[[^\[\]]*\])")

_WHAT = {
    "missing": "is required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_too_short": "is too short",
    "string_too_long": "is too long",
    "too_short": "has too few items",
    "too_long": "has too many items",
    "greater_than_equal": "is too small",
    "greater_than": "is too small",
    "less_than_equal": "is too large",
    "less_than": "is too large",
    "literal_error": "is not one of the allowed values",
    "enum": "is not one of the allowed values",
    "string_pattern_mismatch": "does not have the expected form",
}


def _variants(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a property schema (``anyOf`` of an optional argument)."""
    options = prop.get("anyOf") or prop.get("oneOf") or [prop]
    return [o for o in options if o.get("type") != "null"] or [prop]


def allowed(prop: dict[str, Any]) -> str:
    """What a property schema allows, in words: type, range, length, values; "null" too when optional."""
    parts = []
    for v in _variants(prop):
        kind = v.get("type", "value")
        if "enum" in v or "const" in v:
            values = v.get("enum", [v.get("const")])
            parts.append("one of " + ", ".join(json.dumps(x) for x in values))
            continue
        text = {"integer": "a whole number", "number": "a number", "boolean": "true or false",
                "string": "a string", "object": "an object", "array": "a list"}.get(kind, kind)
        lo = v.get("minimum", v.get("exclusiveMinimum"))
        hi = v.get("maximum", v.get("exclusiveMaximum"))
        if lo is not None and hi is not None:
            text += f" from {lo} to {hi}"
        elif lo is not None:
            text += f" of at least {lo}"
        elif hi is not None:
            text += f" of at most {hi}"
        if "minLength" in v or "maxLength" in v:
            text += f" of {v.get('minLength', 0)}-{v['maxLength']} characters" if "maxLength" in v \
                else f" of at least {v['minLength']} characters"
        if kind == "object" and isinstance(v.get("additionalProperties"), dict):
            text += " whose values are " + allowed(v["additionalProperties"])
        if "maxItems" in v:
            text += f" with at most {v['maxItems']} items"
        if "pattern" in v:
            text += f" matching {v['pattern']}"
        parts.append(text)
    optional = any(o.get("type") == "null" for o in prop.get("anyOf", []))
    return " or ".join(parts) + (" (or leave it out)" if optional else "")


def example(prop: dict[str, Any]) -> str:
    """A valid value for a property schema, as JSON: an ``e.g.`` from its description, its
    non-null default, its first allowed value, or a value inside its range."""
    described = prop.get("description", "")
    literal = _EXAMPLE_JSON.search(described)
    if literal:
        return literal.group(1)
    found = _EXAMPLE.search(described)
    if found:
        text = found.group(2)
        return text if text[:1] in "{[" or text.lstrip("-").isdigit() else json.dumps(text)
    if prop.get("default") is not None:
        return json.dumps(prop["default"])
    v = _variants(prop)[0]
    if "enum" in v or "const" in v:
        return json.dumps(v.get("enum", [v.get("const")])[0])
    kind = v.get("type")
    if kind in ("integer", "number"):
        lo, hi = v.get("minimum", 1), v.get("maximum")
        value = max(lo, min(10, hi)) if hi is not None else max(lo, 10)
        return json.dumps(value)
    return {"boolean": "true", "object": "{}", "array": "[]"}.get(str(kind), '"..."')


def _is_type_tag(part: Any) -> bool:
    """True for a ``loc`` element that names a union member (``str``, ``int``, ``list[str]``,
    ``function-after[...]``), not a field or a key."""
    return isinstance(part, str) and (part in ("str", "int", "bool", "float", "dict", "list", "none")
                                      or "[" in part or part.startswith(("function-", "constrained-")))


def _merge_union_members(errors: list[Any]) -> list[dict[str, Any]]:
    """One error per argument path: the errors of a union's members (``extra_vars.a.str``,
    ``extra_vars.a.int``...) become one whose ``what`` lists every member's complaint."""
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for err in errors:
        loc = tuple(str(p) for p in err.get("loc", ()) if not _is_type_tag(p))
        what = _WHAT.get(err["type"], str(err.get("msg", "is not valid")).rstrip("."))
        if loc in merged:
            seen = merged[loc]
            if what not in seen["what"]:
                seen["what"] = seen["what"] + " or " + what.removeprefix("must be ")
            continue
        merged[loc] = dict(err, loc=loc, what=what)
    return list(merged.values())


def unknown_argument(tool: str, arg: str, props: dict[str, Any], absent: dict[str, str] | None = None) -> str:
    """The line for an argument ``tool`` does not have: why, when ``absent`` says (an argument
    this server's configuration leaves out); else the closest known argument (a misspelling,
    a prefix) and what it takes; else every argument it has."""
    if absent and arg in absent:
        return f"- {arg} is not an argument of {tool} here: {absent[arg]}."
    near = closest(arg, props, n=1)
    known = ", ".join(props) or "no arguments"
    if near:
        return (f"- {cut_text(arg, 60)} is not an argument of {tool}; did you mean {near[0]}? "
                f"({near[0]}: {allowed(props[near[0]])}). It takes: {known}.")
    return f"- {cut_text(arg, 60)} is not an argument of {tool}. It takes: {known}."


def explain(tool: str, exc: ValidationError, schema: dict[str, Any], arguments: dict[str, Any] | None = None,
            absent: dict[str, str] | None = None) -> str:
    """A tool error message for the arguments of ``tool`` that failed ``exc``.

    Args:
        tool: the tool's name (used in the example calls).
        exc: the SDK's argument validation error (an argument the tool does not have is an
            ``extra_forbidden`` error: the server registers every tool with strict arguments).
        schema: the tool's input schema (``properties``, ``required``).
        arguments: the arguments as called (kept for callers; the error names them).
        absent: arguments this server leaves out of the tool on purpose, and why.

    One line per wrong argument (at most 6; an unknown one names the closest known
    argument), then the next step. Values are quoted cut to 60 characters.
    """
    props: dict[str, Any] = schema.get("properties", {})
    lines = [f"Invalid arguments for {tool}:"]
    errors = _merge_union_members(exc.errors(include_url=False))
    for err in errors[:6]:
        if err["type"] == "extra_forbidden" and len(err.get("loc", ())) == 1:
            lines.append(unknown_argument(tool, str(err["loc"][0]), props, absent))
            continue
        loc = [str(p) for p in err.get("loc", ())]
        arg = loc[0] if loc else "?"
        path = ".".join(loc) or "arguments"
        prop = props.get(arg, {})
        what = err.get("what") or _WHAT.get(err["type"], str(err.get("msg", "is not valid")).rstrip("."))
        if err["type"] != "missing":
            given = err.get("input")
            shown = given if isinstance(given, str) else json.dumps(given, default=str)
            size = f", {len(given)} characters" if isinstance(given, str) and len(given) > 60 else ""
            what = f"={cut_text(repr(shown) if isinstance(given, str) else shown, 60)} {what}{size}"
        else:
            what = " " + what
        line = f"- {path}{what}"
        if prop:
            line += f"; allowed: {allowed(prop)}; example: {tool}({arg}={example(prop)})"
        lines.append(line + ".")
    if len(errors) > 6:
        lines.append(f"- ... and {len(errors) - 6} more")
    lines.append("Next step: call again with the corrected arguments.")
    return "\n".join(lines)
