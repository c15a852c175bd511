"""The compact form of the input and output schemas opsmcp publishes in ``tools/list``.

pydantic's JSON schemas carry text that tells a reader nothing the schema does not already
say, and every client hands the input schemas to its model on every turn:

- a ``title`` on every property that is its name title-cased (``"Max Points"`` for
  ``max_points``), on every model that is its ``$defs`` key, and on the root (the result
  class's name, or ``<tool>Arguments``);
- ``"default": null`` on an optional property: not being ``required`` already says it may
  be left out, and its ``anyOf [..., {"type": "null"}]`` that null is allowed; what leaving
  it out means is in its description ("Default: now").

:func:`compact` drops exactly these; every type, bound, enum, ``$defs``/``$ref``,
``required``, ``additionalProperties``, description and non-null default stays, so the
compact schema accepts and rejects the same values (``tests/test_tool_schemas.py`` checks
it). Nullable properties keep the ``anyOf [X, null]`` form: the shorter ``"type": [X,
"null"]`` is valid JSON Schema, but Gemini's function declarations refuse type arrays (HTTP
400 for the whole request), and clients that convert schemas for it split them badly.
"""

from __future__ import annotations

from typing import Any


def auto_title(name: str) -> str:
    """The title pydantic gives a field named ``name`` (``GenerateJsonSchema.field_title``)."""
    return name.title().replace("_", " ").strip()


def compact(schema: dict[str, Any], root_title: str | None = None) -> dict[str, Any]:
    """``schema`` without pydantic's generated titles and ``"default": null`` (see the module
    docstring); a new dict, ``schema`` is left as it is. ``root_title``: the root's generated
    title (the model's class name), dropped when it matches."""
    out = _compact(schema)
    if root_title is not None and out.get("title") == root_title:
        del out["title"]
    return out


def _compact(node: Any) -> Any:
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _property(name, prop) for name, prop in value.items()}
        elif key == "$defs" and isinstance(value, dict):
            out[key] = {name: _model(name, model) for name, model in value.items()}
        else:
            out[key] = _compact(value)
    return out


def _property(name: str, prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    out = _compact(prop)
    if out.get("title") == auto_title(name):
        del out["title"]
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def _model(name: str, model: Any) -> Any:
    out = _compact(model)
    if isinstance(out, dict) and out.get("title") == name:
        del out["title"]
    return out
