"""How much 75 write dry runs with distinct 1 MB free-text arguments grow the audit log, the
preview cache and the process (issue 8 B).

Registers a backend-free write tool (``move_things``, preview bound ``max_items``) on a server
with writes enabled, warms it with one call, then makes 75 dry runs whose ``signature`` is a
distinct 1 MB string, through an in-memory MCP client. Prints the audit file size, the preview
cache's entries and characters, and RSS before and after (Linux ``/proc/self/statm``).
Run: ``python scripts/measure_dry_run_growth.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import Field

from opsmcp.results import Result
from opsmcp.toolsets.base import tool


class MoveResult(Result):
    """What a dry run would move."""

    matched: int = Field(description="Things that match.")
    signature: str = Field(description="The signature asked for, echoed.")


class Things:
    """A write toolset with no backend."""

    @tool(title="Move things", read_only=False, destructive=True, idempotent=False, write=True,
          preview_arg="dry_run", preview_bound=("max_items", "matched"))
    async def move_things(
        self,
        max_items: Annotated[int, Field(description="At most this many.", ge=1, le=100)] = 50,
        signature: Annotated[str | None, Field(description="Only things of this signature.")] = None,
        dry_run: Annotated[bool, Field(description="true: only report.")] = True,
    ) -> MoveResult:
        """Report what would move."""
        return MoveResult(matched=8, signature=signature or "")


def rss_mb() -> int:
    """This process's resident set size in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


async def measure() -> None:
    """Make the dry runs and print the figures."""
    from mcp import Client

    from opsmcp.config import Settings
    from opsmcp.server import build_server, register_toolset

    data = Path(tempfile.mkdtemp(prefix="opsmcp-growth-"))
    server, runtime = build_server(Settings(aws_endpoint_url="http://127.0.0.1:9", data_dir=data, toolsets=[],
                                            allow_writes=True))
    register_toolset(server, runtime, "things", Things())
    async with Client(server) as client:
        await client.call_tool("move_things", {"signature": "warm" + "x" * 1_000_000})
        before = rss_mb()
        for i in range(75):
            await client.call_tool("move_things", {"signature": f"{i:04d}" + "x" * 1_000_000})
        after = rss_mb()
    cache = runtime.approvals.previews
    print(f"audit file: {runtime.settings.audit_log_path.stat().st_size} bytes; preview cache: {len(cache)} entries, "
          f"{sum(len(s.summary) for _, s in cache._items.values())} characters; RSS {before} MB -> {after} MB")


if __name__ == "__main__":
    import anyio

    anyio.run(measure)
