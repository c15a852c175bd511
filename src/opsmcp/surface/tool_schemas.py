"""The input and output schemas opsmcp publishes in ``tools/list``: their compact form
(:func:`compact`), and the output schemas kept from an earlier start (:class:`OutputSchemas`).

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

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("opsmcp")


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


#: Bumped when what a cache file holds changes shape.
CACHE_FORMAT = 1
#: A cache file larger than this is not read (it is opsmcp's own output: ~60 KB for every tool).
MAX_CACHE_BYTES = 4 * 1024 * 1024
_PREFIX = "tool-schemas-"


class OutputSchemas:
    """Output schemas derived on an earlier start, so a start whose code and libraries are
    unchanged publishes them without deriving them again (pydantic's JSON schema generation
    for every result class: ~15-40 ms of a cold start on this machine).

    One JSON file in ``directory`` (``<data dir>/cache``, 0700; the file 0600), named by a
    digest of everything a derived schema depends on: opsmcp's version and the text of every
    one of its modules (an edited result class changes the name, whatever the files' times),
    the versions of mcp, pydantic, pydantic-core and Python, and :data:`CACHE_FORMAT`. Each entry
    also names the tool's result class, checked on use. Files with other digests are
    removed when a new one is written, so the cache holds one file. Reading or writing it
    never fails a start: a missing, unreadable, corrupt or oversized file is a miss (logged
    at DEBUG), and the schemas are derived as without a cache.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._entries: dict[str, Any] | None = None
        self._changed = False
        self._name = ""

    def get(self, tool: str, returns: type) -> dict[str, Any] | None:
        """The cached output schema of ``tool`` whose result class is ``returns``, or None."""
        entry = self._load().get(tool)
        if isinstance(entry, dict) and entry.get("returns") == _qualified(returns) and isinstance(
                entry.get("schema"), dict):
            return entry["schema"]
        return None

    def put(self, tool: str, returns: type, schema: dict[str, Any]) -> None:
        """Remember ``schema`` as ``tool``'s output schema (written by :meth:`save`)."""
        entries = self._load()
        entry = {"returns": _qualified(returns), "schema": schema}
        if entries.get(tool) != entry:
            entries[tool] = entry
            self._changed = True

    def save(self) -> None:
        """Write the schemas when :meth:`put` changed any (atomically: a temporary file
        renamed over the cache file) and remove cache files of other digests."""
        if not self._changed:
            return
        import json
        import os
        import tempfile

        from opsmcp.private import FILE_MODE, private_dir

        try:
            private_dir(self.directory)
            fd, temporary = tempfile.mkstemp(prefix=".tool-schemas.", dir=self.directory)  # 0600
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._entries, fh, separators=(",", ":"), ensure_ascii=False)
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, self.directory / self._name)
            self._changed = False
            for stale in self.directory.glob(f"{_PREFIX}*.json"):
                if stale.name != self._name:
                    stale.unlink(missing_ok=True)
        except OSError:
            log.debug("could not write the tool schema cache in %s", self.directory, exc_info=True)

    def _load(self) -> dict[str, Any]:
        if self._entries is not None:
            return self._entries
        import json

        self._name = f"{_PREFIX}{fingerprint()}.json"
        self._entries = {}
        path = self.directory / self._name
        try:
            if path.stat().st_size <= MAX_CACHE_BYTES:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._entries = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            log.debug("ignoring the tool schema cache %s", path, exc_info=True)
        return self._entries


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def fingerprint() -> str:
    """A digest of what the derived output schemas depend on (see :class:`OutputSchemas`)."""
    import hashlib
    import os
    import sys
    from importlib.metadata import version

    import pydantic
    import pydantic_core

    import opsmcp

    package = Path(opsmcp.__file__).parent
    digest = hashlib.sha256("\n".join([str(CACHE_FORMAT), opsmcp.__version__, version("mcp"), pydantic.VERSION,
                                        pydantic_core.__version__, sys.version, ""]).encode())
    for root, dirs, files in os.walk(package):  # ~1 MB of modules: ~3 ms
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                text = fh.read()
            digest.update(f"\0{os.path.relpath(path, package)}\0{len(text)}\0".encode() + text)
    return digest.hexdigest()[:32]
