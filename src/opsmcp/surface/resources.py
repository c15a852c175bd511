"""MCP resources: what a person attaches to a conversation, and live queue state.

* ``opsmcp://playbooks/catalog``: the playbook catalog YAML, as the operator wrote it;
* ``opsmcp://playbooks/{name}``: one catalog playbook's source (YAML);
* ``opsmcp://runbooks/{name}``: a Markdown runbook (``runbooks/`` next to the catalog file,
  then the runbooks shipped with opsmcp): one per playbook and one per incident kind;
* ``opsmcp://queues/{name}``: a queue's current state as JSON (counts, DLQ wiring,
  timeouts). A client may subscribe to it (``resources/subscribe`` on protocol 2025-11-25,
  ``subscriptions/listen`` on 2026-07-28) and is told when its depth changes.

Playbooks and runbooks are listed one by one in ``resources/list`` (Claude Desktop's
attach menu shows listed resources) and are also templates; queues are templates only.

Unknown names answer JSON-RPC ``-32602`` (the SDK's code for a resource that does not
exist, as SEP-2164 standardises) with the closest names in the message. A backend failure
answers ``-32603`` with the reason.

Depth changes are found by :class:`~opsmcp.surface.subscriptions.QueueWatch`
(:mod:`opsmcp.surface.subscriptions`), reading each subscribed queue every
``settings.resource_poll_seconds``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.mcpserver.resources import FileResource
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import INVALID_PARAMS

from opsmcp.catalog import packaged_runbooks
from opsmcp.errors import NotFound, OpsError, did_you_mean
from opsmcp.surface.subscriptions import QUEUE_PREFIX, Depth, QueueWatch, register_subscriptions

if TYPE_CHECKING:
    from mcp.server.subscriptions import SubscriptionBus

    from opsmcp.backends.ansible.reader import CatalogReader
    from opsmcp.calls.runtime import Runtime

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")


# ------------------------------------------------------------------------ runbooks


def runbook_dirs(catalog_path: Path) -> list[Path]:
    """Directories searched for runbooks, first match wins: ``runbooks/`` next to the
    catalog file, then the runbooks shipped with opsmcp."""
    out: list[Path] = []
    for d in (catalog_path.parent / "runbooks", packaged_runbooks()):
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def runbook_files(catalog_path: Path) -> dict[str, Path]:
    """Runbook name (file name without ``.md``) -> its file, first directory winning."""
    found: dict[str, Path] = {}
    for d in runbook_dirs(catalog_path):
        for path in sorted(d.glob("*.md")):
            if _NAME_RE.match(path.stem):
                found.setdefault(path.stem, path)
    return found


def runbook_names(catalog_path: Path) -> list[str]:
    """Every runbook name, sorted."""
    return sorted(runbook_files(catalog_path))


def _runbook_path(catalog_path: Path, name: str) -> Path:
    files = runbook_files(catalog_path)
    if _NAME_RE.match(name) and name in files:
        return files[name]
    raise _not_found("runbook", name, sorted(files), f"opsmcp://runbooks/{name}")


def read_runbook(catalog_path: Path, name: str) -> str:
    """The Markdown text of runbook ``name``.

    Raises:
        ResourceNotFoundError: no such runbook (the message lists the closest names).
    """
    return _runbook_path(catalog_path, name).read_text(encoding="utf-8")


def runbooks_mentioning(catalog_path: Path, word: str) -> list[str]:
    """URIs of the runbooks whose text contains ``word`` (e.g. a queue name)."""
    if not word:
        return []
    return [f"opsmcp://runbooks/{n}" for n, path in sorted(runbook_files(catalog_path).items())
            if word in path.read_text(encoding="utf-8")]


def _first_line(text: str) -> str:
    return next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.strip()), "")


def _not_found(kind: str, name: str, names: list[str], uri: str) -> ResourceNotFoundError:
    hint = did_you_mean(name, names, 3, sentence=True)
    hint = f" {hint}" if hint else ""
    return ResourceNotFoundError(f"No {kind} {name!r} ({uri}).{hint} Known: {', '.join(names) or 'none'}.")


# ------------------------------------------------------------------------ queue state


async def queue_state(runtime: Runtime, name: str) -> dict[str, Any]:
    """The current state of queue ``name`` as a JSON-ready dict
    (:meth:`~opsmcp.analysis.queue_state.QueueStates.describe`: counts, FIFO, its DLQ and
    maxReceiveCount, the queues it is the DLQ of, visibility timeout and retention).

    Raises:
        ResourceNotFoundError: not a valid queue name, no such queue, or no queues toolset.
        ResourceError: SQS failed (the reason and the next step are in the message).
    """
    if not _QUEUE_RE.match(name):
        raise ResourceNotFoundError(f"{name!r} is not a queue name (letters, digits, - and _, at most 80, "
                                    "optionally ending in .fifo).")
    if runtime.queues is None:
        raise ResourceNotFoundError(f"Queue resources need the queues toolset ({QUEUE_PREFIX}{name}).")
    try:
        await runtime.wait_ready()
        return await runtime.queues.describe(name)
    except NotFound as exc:
        raise ResourceNotFoundError(f"{exc} ({QUEUE_PREFIX}{name})") from None
    except OpsError as exc:
        raise ResourceError(str(exc)) from None


# ------------------------------------------------------------------------ registration


def register_resources(server: MCPServer, runtime: Runtime, bus: SubscriptionBus) -> QueueWatch | None:
    """Register the resources of the enabled toolsets; return the queue watcher (None when
    the queues toolset is off). ``bus``: the server's ``subscriptions/listen`` bus (the one
    handed to ``MCPServer(subscriptions=...)``), where queue changes are published.

    Playbook resources need the playbooks toolset (``list_playbooks`` registered); runbooks
    are always served; queue state needs ``list_queues``. Registers the
    ``resources/subscribe`` / ``unsubscribe`` handlers and a ``subscriptions/listen``
    middleware for queue resources.
    """
    tools = runtime.tools
    catalog_path = Path(runtime.settings.playbook_catalog)
    if runtime.catalog is not None and "list_playbooks" in tools:
        _register_playbooks(server, runtime.catalog, catalog_path)
    for name, path in sorted(runbook_files(catalog_path).items()):
        title = _first_line(path.read_text(encoding="utf-8"))
        server.add_resource(FileResource(uri=f"opsmcp://runbooks/{name}", name=f"runbook-{name}", title=title,
                                         description=f"Runbook: {title}", mime_type="text/markdown",
                                         path=path, encoding="utf-8"))

    @server.resource("opsmcp://runbooks/{name}", name="runbook", title="Runbook",
                     description="A Markdown runbook: one per catalog playbook and one per incident kind.",
                     mime_type="text/markdown")
    def runbook(name: str) -> str:
        return read_runbook(catalog_path, name)

    server.middleware.append(_unknown_resource_hint(server))
    queues = runtime.queues
    if "list_queues" not in tools or queues is None:
        return None

    @server.resource("opsmcp://queues/{name}", name="queue", title="Queue state",
                     description="A queue's current counts and DLQ wiring as JSON; subscribe to hear when its depth "
                     "changes.", mime_type="application/json")
    async def queue(name: str) -> str:
        return json.dumps(await queue_state(runtime, name), indent=1)

    async def read_depth(name: str) -> Depth:
        await runtime.wait_ready()
        if not _QUEUE_RE.match(name):
            raise ResourceNotFoundError(f"{name!r} is not a queue name.")
        return await queues.depth(name)

    async def publish(uri: str) -> None:
        await bus.publish(ResourceUpdated(uri=uri))

    watch = QueueWatch(read_depth, publish, runtime.settings.resource_poll_seconds)
    register_subscriptions(server, watch)
    return watch


def _unknown_resource_hint(server: MCPServer) -> ServerMiddleware[Any]:
    """A middleware that adds the served URI templates to the SDK's bare "Unknown resource"
    error (still -32602), so the client knows what it can read instead."""

    async def hint(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "resources/read":
            return await call_next(ctx)
        try:
            return await call_next(ctx)
        except MCPError as exc:
            if exc.error.code != INVALID_PARAMS or not exc.error.message.startswith("Unknown resource"):
                raise
            served = [t.uri_template for t in await server.list_resource_templates()]
            raise MCPError(INVALID_PARAMS, f"{exc.error.message}. opsmcp serves: opsmcp://playbooks/catalog, "
                           + ", ".join(served) + " (resources/list names each one).", exc.error.data) from None

    return hint


def _register_playbooks(server: MCPServer, catalog: CatalogReader, catalog_path: Path) -> None:
    server.add_resource(FileResource(uri="opsmcp://playbooks/catalog", name="playbook-catalog",
                                     title="Playbook catalog", mime_type="application/yaml", encoding="utf-8",
                                     description="The playbooks run_playbook may run, their variables and risk (YAML).",
                                     path=catalog_path.resolve()))

    def source(name: str) -> str:
        try:
            entry = catalog().get(name)
        except NotFound:
            raise _not_found("playbook", name, catalog().names, f"opsmcp://playbooks/{name}") from None
        return entry.file.read_text(encoding="utf-8")

    for entry in catalog().playbooks:
        server.add_resource(FileResource(uri=f"opsmcp://playbooks/{entry.name}", name=f"playbook-{entry.name}",
                                         title=f"Playbook {entry.name}", mime_type="application/yaml",
                                         description=f"{entry.risk}: {entry.description}", path=entry.file,
                                         encoding="utf-8"))

    @server.resource("opsmcp://playbooks/{name}", name="playbook", title="Playbook source",
                     description="The YAML source of one catalog playbook.", mime_type="application/yaml")
    def playbook(name: str) -> str:
        return source(name)
