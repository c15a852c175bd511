"""Characters a model reads on the sandbox triage path, per tool result.

    list_queues → analyze_dlq(order-queue-dlq) → get_trace(first trace) → get_order(first order)

Starts an in-process moto server, seeds the sandbox scenario (queues, orders, log store),
and calls the tools through an in-memory MCP client. Prints, per step, the characters of the
text content (what many clients hand to the model) and of ``structuredContent`` as compact
JSON. Run it against any checkout to compare: ``PYTHONPATH=<checkout>/src python
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


def main() -> None:
    """Print the table and the totals."""
    import anyio

    rows = anyio.run(measure)
    for name, text, compact in rows:
        print(f"{name:70} text={text:6} structured_compact={compact:6}")
    print(f"{'total':70} text={sum(r[1] for r in rows):6} structured_compact={sum(r[2] for r in rows):6}")


if __name__ == "__main__":
    main()
