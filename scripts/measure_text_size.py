"""Characters a model reads: the tool definitions, and each result on the sandbox triage path.

1. **Tool definitions** of the tools ``opsmcp serve`` registers on the sandbox (toolsets
   queues, orders, logs, metrics, playbooks; Prometheus and Alertmanager are not configured
   there), with writes off and then on. Per tool: its description, its input schema and its
   output schema as compact JSON, and two totals:

   - **definitions** = name + description + compact input schema, summed over the tools
     (what a client hands its model on every turn);
   - **whole tools/list** = the compact JSON (``ensure_ascii=False``) of the whole
     ``tools/list`` result: titles, annotations and output schemas included.

2. **The triage path** (skipped with ``--definitions-only``)::

    list_queues → analyze_dlq(order-queue-dlq) → get_trace(first trace) → get_order(first order)

   Starts an in-process moto server, seeds the sandbox scenario (queues, orders, log store),
   and calls the tools through an in-memory MCP client. Prints, per step, the characters of
   the text content (what many clients hand to the model) and of ``structuredContent`` as
   compact JSON.

Run it against any checkout to compare: ``PYTHONPATH=<checkout>/src python
scripts/measure_text_size.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


async def measure() -> list[tuple[str, int, int]]:
    """Run the triage path; return ``(step, text characters, compact structured characters)``."""
    from mcp import Client

    from opsmcp.config import Settings
    from opsmcp.sandbox import start_moto
    from opsmcp.sandbox.logseed import seed_logs
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    moto, endpoint = start_moto()
    data = Path(tempfile.mkdtemp(prefix="opsmcp-measure-"))
    settings = Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", data_dir=data, log_store=data / "logs.db")
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    seed_logs(settings.log_store_path, scenario)
    server, _ = build_server(settings)
    rows: list[tuple[str, int, int]] = []

    async def step(client: Any, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        text = "".join(getattr(c, "text", "") for c in result.content)
        compact = json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
        rows.append((f"{tool}({', '.join(f'{k}={v}' for k, v in arguments.items())})", len(text), len(compact)))
        return dict(result.structured_content or {})

    try:
        async with Client(server) as client:
            await step(client, "list_queues")
            analysis = await step(client, "analyze_dlq", queue="order-queue-dlq")
            group = next(g for g in analysis["groups"] if g["trace_ids"] and g["order_ids"])
            await step(client, "get_trace", trace_id=group["trace_ids"][0])
            await step(client, "get_order", order_id=group["order_ids"][0])
    finally:
        moto.stop()
    return rows


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def definitions(allow_writes: bool) -> tuple[list[tuple[str, int, int, int, int, int]], int]:
    """The sandbox's tools as ``tools/list`` gives them: per tool ``(name, description, input
    schema, output schema, definition, whole entry)`` characters, and the whole list's."""
    from mcp import Client

    from opsmcp.config import Settings
    from opsmcp.server import build_server

    data = Path(tempfile.mkdtemp(prefix="opsmcp-measure-"))
    settings = Settings(aws_endpoint_url="http://127.0.0.1:9", aws_region="us-east-1", data_dir=data,
                        log_store=data / "logs.db", allow_writes=allow_writes, prometheus_url=None,
                        alertmanager_url=None, alerts_table=None)
    server, _ = build_server(settings)
    async with Client(server) as client:
        listed = await client.list_tools()
    rows = []
    for t in listed.tools:
        description = t.description or ""
        schema_in = _compact(t.input_schema)
        schema_out = _compact(t.output_schema) if t.output_schema else ""
        entry = _compact(t.model_dump(mode="json", by_alias=True, exclude_none=True))
        rows.append((t.name, len(description), len(schema_in), len(schema_out),
                     len(t.name) + len(description) + len(schema_in), len(entry)))
    return rows, len(_compact(listed.model_dump(mode="json", by_alias=True, exclude_none=True)))


def print_definitions() -> None:
    """Print the per-tool table (writes off) and the totals with writes off and on."""
    import anyio

    for allow_writes in (False, True):
        rows, whole = anyio.run(definitions, allow_writes)
        if not allow_writes:
            print(f"{'tool':24} {'description':>11} {'input':>6} {'output':>6} {'definition':>10} {'entry':>6}")
            for name, desc, schema_in, schema_out, definition, entry in rows:
                print(f"{name:24} {desc:11} {schema_in:6} {schema_out:6} {definition:10} {entry:6}")
        print(f"writes {'on ' if allow_writes else 'off'}: {len(rows)} tools; definitions (name + description + "
              f"compact input schema) {sum(r[4] for r in rows):,}; whole tools/list {whole:,}")


def main() -> None:
    """Print the definitions, then the triage path's table and totals."""
    import sys

    import anyio

    print_definitions()
    if "--definitions-only" in sys.argv[1:]:
        return
    print()
    rows = anyio.run(measure)
    for name, text, compact in rows:
        print(f"{name:70} text={text:6} structured_compact={compact:6}")
    print(f"{'total':70} text={sum(r[1] for r in rows):6} structured_compact={sum(r[2] for r in rows):6}")


if __name__ == "__main__":
    main()
