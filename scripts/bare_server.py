"""The protocol's floor: a bare SDK ``MCPServer`` with a trivial tool and nothing else.

The benchmarks run it next to opsmcp over the same transport: its cold start and its call
latency are what the SDK costs before any opsmcp code runs. ``get_item`` makes the same
boto3 call as opsmcp's ``get_order`` with nothing around it, for throughput comparisons.

Usage: python scripts/bare_server.py [--transport stdio|http] [--port 3002]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mcp.server import MCPServer
from pydantic import BaseModel, Field


class EchoOut(BaseModel):
    """The trivial tool's result."""

    x: int = Field(description="The number passed in.")


async def echo(n: int = 1) -> EchoOut:
    """Return ``n``: no I/O, so a call costs only the SDK and the transport."""
    return EchoOut(x=n)


class ItemOut(BaseModel):
    """The raw item's result."""

    found: bool = Field(description="Whether the order exists.")
    item: dict[str, Any] | None = Field(None, description="The DynamoDB item, as boto3 returns it.")


_ddb: list[Any] = []


async def get_item(order_id: str) -> ItemOut:
    """The same boto3 ``get_item`` that ``get_order`` makes (``AWS_ENDPOINT_URL``, table
    ``orders``), in a worker thread, with nothing around it: what any SDK server must pay."""
    import anyio.to_thread

    if not _ddb:
        import boto3

        _ddb.append(boto3.client("dynamodb", endpoint_url=os.environ.get("AWS_ENDPOINT_URL")))
    response = await anyio.to_thread.run_sync(
        lambda: _ddb[0].get_item(TableName="orders", Key={"orderId": {"S": order_id}}, ConsistentRead=True))
    return ItemOut(found="Item" in response, item=response.get("Item"))


def main() -> None:
    """Serve the bare server over stdio or streamable HTTP (127.0.0.1)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=3002)
    args = parser.parse_args()
    server = MCPServer("bare", log_level="WARNING")
    server.add_tool(echo, name="echo")
    server.add_tool(get_item, name="get_item")
    if args.transport == "stdio":
        import anyio

        anyio.run(server.run_stdio_async)
    else:
        import uvicorn

        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=args.port,
                    log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
