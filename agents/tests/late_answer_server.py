"""A minimal stdio MCP server whose one tool answers only after its client has gone.

Used by the time-limit regression test: it speaks JSON-RPC by hand (no SDK) so its timing
is exact. ``initialize`` and ``tools/list`` are answered at once; a ``tools/call`` is left
pending until stdin closes, and then answered (as a server that finishes or reports the
cancellation of an in-flight call during shutdown does) before the process exits.
"""

from __future__ import annotations

import json
import sys

TOOL = {
    "name": "analyze_dlq",
    "description": "Group a DLQ by failure signature (never answers in time).",
    "inputSchema": {"type": "object", "properties": {"queue": {"type": "string"}}, "required": ["queue"]},
}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    pending: list[object] = []
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        method, msg_id = msg.get("method"), msg.get("id")
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": msg_id, "result": {
                "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "late-answer", "version": "0"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": msg_id, "result": {"tools": [TOOL]}})
        elif method == "tools/call":
            pending.append(msg_id)
        elif msg_id is not None:
            send({"jsonrpc": "2.0", "id": msg_id, "result": {}})
    for msg_id in pending:  # stdin closed: the client is gone; answer anyway
        send({"jsonrpc": "2.0", "id": msg_id, "result": {"content": [{"type": "text", "text": "too late"}]}})


if __name__ == "__main__":
    main()
