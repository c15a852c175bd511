"""``completion/complete`` for prompt arguments and resource template parameters, and the
one call that registers prompts, resources and completions on a server.

Values come from the live systems, through what the runtime exposes (never through a
toolset or a tool call): queue names from SQS (``runtime.queues``), playbook names from the
catalog (``runtime.catalog``), runbook names from the runbook directories, alert
fingerprints from the alert store (``runtime.alerts``). A backend that fails or is still
starting yields no values, never an error: completion is a hint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from mcp.server import MCPServer
from mcp_types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference

from opsmcp.surface.prompts import register_prompts
from opsmcp.surface.resources import register_resources, runbook_names, runbooks_mentioning

if TYPE_CHECKING:
    from mcp.server.subscriptions import SubscriptionBus

    from opsmcp.calls.runtime import Runtime

log = logging.getLogger(__name__)

MAX_VALUES = 100  # the MCP spec's cap per completion response
WAIT_SECONDS = 5.0  # how long a completion waits for the sandbox to finish starting


def rank(values: Iterable[str], typed: str, first: Callable[[str], bool] | None = None) -> Completion:
    """The completion of ``typed`` among ``values``: names starting with it (case-insensitive),
    then names containing it; within each, those for which ``first`` is true lead. At most
    ``MAX_VALUES``; ``has_more`` says when some were left out."""
    t = typed.lower()
    names = sorted(set(values))
    starts = [v for v in names if v.lower().startswith(t)]
    contains = [v for v in names if t in v.lower() and v not in starts]
    if first is not None:
        starts = sorted(starts, key=lambda v: not first(v))
        contains = sorted(contains, key=lambda v: not first(v))
    found = starts + contains
    return Completion(values=found[:MAX_VALUES], total=len(found), has_more=len(found) > MAX_VALUES)


def _looks_like_dlq(name: str) -> bool:
    n = name.lower()
    return "dlq" in n or "dead" in n


class Completer:
    """The sources of completion values for one server.

    Args:
        runtime: settings, the registered tools, and the queue, catalog and alert readers.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def queue_names(self) -> list[str]:
        """Every queue name (SQS ListQueues, all pages); [] when SQS fails or is not ready."""
        queues = self.runtime.queues
        if queues is None or "list_queues" not in self.runtime.tools:
            return []
        with anyio.move_on_after(WAIT_SECONDS):
            try:
                await self.runtime.wait_ready()
                return await queues.names()
            except Exception as exc:
                log.info("queue name completion failed: %s", exc)
        return []

    def playbook_names(self) -> list[str]:
        """Names of the catalog's playbooks; [] without the playbooks toolset."""
        catalog = self.runtime.catalog
        if catalog is None or "list_playbooks" not in self.runtime.tools:
            return []
        try:
            return list(catalog().names)
        except Exception as exc:
            log.info("playbook name completion failed: %s", exc)
            return []

    def runbook_names(self) -> list[str]:
        """Names of the runbooks."""
        return runbook_names(Path(self.runtime.settings.playbook_catalog))

    async def alert_fingerprints(self) -> list[str]:
        """Fingerprints of the stored alerts (the alert store); [] without the alerts toolset."""
        store = self.runtime.alerts
        if store is None or "list_alerts" not in self.runtime.tools:
            return []
        with anyio.move_on_after(WAIT_SECONDS):
            try:
                return [a.fingerprint for a in await store.all()]
            except Exception as exc:
                log.info("alert fingerprint completion failed: %s", exc)
        return []

    async def complete(self, ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                       context: CompletionContext | None) -> Completion | None:
        """The ``completion/complete`` handler: values for ``argument`` of ``ref``."""
        sources: dict[tuple[str, str], Callable[[], Awaitable[list[str]] | list[str]]] = {
            ("triage_dlq", "queue"): self.queue_names,
            ("investigate_alert", "fingerprint"): self.alert_fingerprints,
            ("opsmcp://queues/{name}", "name"): self.queue_names,
            ("opsmcp://playbooks/{name}", "name"): self.playbook_names,
            ("opsmcp://runbooks/{name}", "name"): self.runbook_names,
        }
        key = (ref.name if isinstance(ref, PromptReference) else str(ref.uri), argument.name)
        source = sources.get(key)
        if source is None:
            return None
        values = source()
        if not isinstance(values, list):
            values = await values
        first = _looks_like_dlq if key[0] == "triage_dlq" else None
        return rank(values, argument.value or "", first)


def register_prompts_and_resources(server: MCPServer, runtime: Runtime, bus: SubscriptionBus) -> None:
    """Register prompts, resources (with subscriptions) and completions for the tools that
    ``runtime`` registered; call after the tools are registered. ``bus``: the server's
    ``subscriptions/listen`` bus (see :func:`~opsmcp.surface.resources.register_resources`)."""
    catalog = Path(runtime.settings.playbook_catalog)
    register_prompts(server, runtime.tools, lambda word: runbooks_mentioning(catalog, word))
    register_resources(server, runtime, bus)
    server.completion()(Completer(runtime).complete)
