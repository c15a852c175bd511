"""The protocol's floor: a bare SDK ``MCPServer`` with one trivial tool and nothing else.

The benchmarks run it next to opsmcp over the same transport: its cold start and its call
latency are what the SDK costs before any opsmcp code runs.

Usage: python scripts/bare_server.py [--transport stdio|http] [--port 3002]
"""

from __future__ import annotations

import argparse

from mcp.server import MCPServer
from pydantic import BaseModel, Field


class EchoOut(BaseModel):
    """The trivial tool's result."""

    x: int = Field(description="The number passed in.")


async def echo(n: int = 1) -> EchoOut:
    """Return ``n``: no I/O, so a call costs only the SDK and the transport."""
    return EchoOut(x=n)


def main() -> None:
    """Serve the bare server over stdio or streamable HTTP (127.0.0.1)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=3002)
    args = parser.parse_args()
    server = MCPServer("bare", log_level="WARNING")
    server.add_tool(echo, name="echo")
    if args.transport == "stdio":
        import anyio

        anyio.run(server.run_stdio_async)
    else:
        import uvicorn

        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=args.port,
                    log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
