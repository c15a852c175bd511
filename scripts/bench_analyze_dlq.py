"""analyze_dlq's cost against DLQ depth: answer time and receive calls at 100, 1k, 10k, 50k
dead letters on moto (its own process), with ratios to the smallest depth in the same run.

moto runs in a child process of this script (``--moto-child``), which seeds every DLQ
straight into moto's in-process backend before it serves: sending 50,000 messages over
the API costs O(depth) per message on moto (every send recomputes the queue's counts),
hours at 50k; appending them to the backend takes seconds. The driver calls
``QueueTools.analyze_dlq`` in this process (no MCP transport), each call on a fresh
toolset (no shared read), and times moto's calls by operation through botocore's events.

The dead letters tell a story the sample has to find: 70% ``Timeout`` and 25% ``Declined``
interleaved over the whole queue, and 5% ``OutOfStock`` only among the newest tenth.
moto returns the oldest messages first, so a sample of a deep queue misses the newest
failure: the table says how many of the 3 groups each answer found, and how far its
extrapolated ``Timeout`` count is from the truth.

``--moto-fix`` runs moto with ``scripts/moto_retention_fix.py``'s patch (its receive costs
O(depth) per *message* without it: three scans of the queue for each message received).
``--unbounded-up-to N`` adds, for depths up to N, a run without the bounds (max_messages
5000, a 600 s budget): how the tool read before it sampled.

Usage: python scripts/bench_analyze_dlq.py [--depths 100 1000 10000 50000] [--rounds 2] [--moto-fix]
       [--budget 4] [--max-messages 1000] [--unbounded-up-to 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import free_port, machine, table

GROUPS = ("Timeout", "Declined", "OutOfStock")


def cause(i: int, depth: int) -> str:
    """The failure of dead letter ``i`` (0 = oldest) of ``depth``: see the module docstring."""
    if i >= depth * 9 // 10 and i % 2 == 0:
        return "OutOfStock"  # half of the newest tenth: 5% of the queue
    return "Declined" if i % 4 == 3 else "Timeout"


def moto_child(port: int, depths: list[int], fix: bool) -> None:
    """Serve moto on ``port`` with one DLQ per depth (``bench-dlq-<depth>``, fed by
    ``bench-src-<depth>``), seeded through moto's backend; print ``ready`` and serve until killed."""
    if fix:
        import moto_retention_fix  # noqa: F401 - patches moto's SQS backend on import
    import logging

    from moto.server import ThreadedMotoServer
    from moto.sqs.models import Message, sqs_backends

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    backend = sqs_backends["123456789012"]["us-east-1"]
    for depth in depths:
        dlq = backend.create_queue(f"bench-dlq-{depth}", {})
        backend.create_queue(f"bench-src-{depth}", {}, RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": dlq.queue_arn, "maxReceiveCount": 3}))
        for i in range(depth):
            code = cause(i, depth)
            m = Message(str(uuid.uuid4()), json.dumps({"orderId": f"ord-{depth}-{i}", "traceId": uuid.uuid4().hex,
                                                       "type": "OrderCreated"}))
            m.message_attributes = {"ErrorCode": {"DataType": "String", "StringValue": code},
                                    "ErrorMessage": {"DataType": "String", "StringValue": f"{code} after {i % 97} ms"}}
            m.mark_sent()
            dlq._messages.append(m)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def wait_idle(pid: int, limit: float = 180.0) -> None:
    """Wait (at most ``limit`` s) until process ``pid`` uses under 10% of a core over half a second."""
    import psutil

    proc = psutil.Process(pid)
    deadline = time.monotonic() + limit
    while proc.cpu_percent(interval=0.5) > 10 and time.monotonic() < deadline:
        pass


class OpTimer:
    """Seconds and calls per SQS operation of one boto3 client (botocore before/after-call events)."""

    def __init__(self, client: Any) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._started: dict[int, float] = {}
        client.meta.events.register("before-call.sqs.*", self._before)
        client.meta.events.register("after-call.sqs.*", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        import threading

        self._started[threading.get_ident()] = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        import threading

        took = time.perf_counter() - self._started.pop(threading.get_ident(), time.perf_counter())
        self.seconds[model.name] = self.seconds.get(model.name, 0.0) + took
        self.calls[model.name] = self.calls.get(model.name, 0) + 1


async def measure(endpoint: str, depth: int, budget: float, max_messages: int) -> dict[str, Any]:
    """One analyze_dlq of ``bench-dlq-<depth>`` on a fresh toolset, then the same call again
    (served by the shared read). Returns the figures of one table row."""
    from opsmcp.backends.aws import AwsClients
    from opsmcp.backends.sqs import SqsBackend
    from opsmcp.config import Settings
    from opsmcp.errors import OpsError
    from opsmcp.toolsets.queues import QueueTools

    settings = Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", toolsets=["queues"],
                        dlq_read_seconds=budget, data_dir=Path("/tmp"))
    clients = AwsClients(settings)
    ops = OpTimer(clients.client("sqs"))
    tools = QueueTools(SqsBackend(clients))
    await tools.sqs.resolve(f"bench-dlq-{depth}")  # the client's first request (credentials, model) apart
    ops.seconds.clear()
    ops.calls.clear()
    t0 = time.perf_counter()
    try:
        out = await tools.analyze_dlq(f"bench-dlq-{depth}", max_messages=max_messages)
    except OpsError as exc:  # the tool's answer was an error (e.g. moto too slow for the backend timeout)
        return {"s": time.perf_counter() - t0, "shared_s": float("nan"), "read": 0, "receives": 0, "total": "-",
                "why": f"tool error: {str(exc).split('.')[0]}", "found": 0, "err": float("nan"),
                "attr_s": ops.seconds.get("GetQueueAttributes", 0.0), "attr_n": ops.calls.get("GetQueueAttributes", 0),
                "recv_s": ops.seconds.get("ReceiveMessage", 0.0), "notes": []}
    took = time.perf_counter() - t0
    attr_s, attr_n = ops.seconds.get("GetQueueAttributes", 0.0), ops.calls.get("GetQueueAttributes", 0)
    recv_s = ops.seconds.get("ReceiveMessage", 0.0)
    if os.environ.get("BENCH_DEBUG"):
        print({k: (ops.calls[k], round(v, 2)) for k, v in ops.seconds.items()}, f"read_seconds {out.read_seconds}")
    t1 = time.perf_counter()
    try:
        again = await tools.analyze_dlq(f"bench-dlq-{depth}", max_messages=max_messages)
        shared = time.perf_counter() - t1 if again.age_seconds > 0 else float("nan")
    except OpsError:
        shared = float("nan")
    timeout = sum(cause(i, depth) == "Timeout" for i in range(depth))
    est = next((g.estimated_count for g in out.groups if g.signature.startswith("Timeout")), 0)
    found = {g.signature.split(":")[0] for g in out.groups} & set(GROUPS)
    return {"s": took, "shared_s": shared, "read": out.messages_read,
            "receives": out.receive_calls, "total": out.approximate_total, "why": ",".join(out.incomplete_because),
            "found": len(found),
            "err": (est - timeout) / timeout * 100 if timeout and out.messages_read else float("nan"),
            "attr_s": attr_s, "attr_n": attr_n, "recv_s": recv_s, "notes": out.notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[100, 1000, 10_000, 50_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--moto-fix", action="store_true", help="moto with scripts/moto_retention_fix.py")
    parser.add_argument("--budget", type=float, default=4.0, help="OPSMCP_DLQ_READ_SECONDS (default 4)")
    parser.add_argument("--max-messages", type=int, default=1000, help="analyze_dlq's max_messages (default 1000)")
    parser.add_argument("--unbounded-up-to", type=int, default=0,
                        help="also run without bounds (5000 messages, 600 s) at depths up to this")
    parser.add_argument("--moto-child", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.moto_child:
        moto_child(opts.moto_child, opts.depths, opts.moto_fix)
        return

    import anyio

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    print(f"== analyze_dlq against DLQ depth ({'moto with the retention fix' if opts.moto_fix else 'stock moto'}) ==")
    print(f"options: depths {opts.depths}, rounds {opts.rounds}, budget {opts.budget} s, max_messages "
          f"{opts.max_messages}, unbounded up to {opts.unbounded_up_to}")
    print(f"start: {machine()}")
    port = free_port()
    argv = [sys.executable, __file__, "--moto-child", str(port), "--depths", *map(str, opts.depths)]
    t0 = time.perf_counter()
    child = subprocess.Popen(argv + (["--moto-fix"] if opts.moto_fix else []), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("moto child did not start")
        print(f"seeded {sum(opts.depths):,} dead letters in {time.perf_counter() - t0:.1f} s")
        endpoint = f"http://127.0.0.1:{port}"
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        plans = [("bounded", d, opts.budget, opts.max_messages) for d in opts.depths]
        plans += [("unbounded", d, 600.0, 5000) for d in opts.depths if d <= opts.unbounded_up_to]
        for r in range(opts.rounds):
            for mode, depth, budget, max_messages in plans:
                row = anyio.run(measure, endpoint, depth, budget, max_messages)
                runs.setdefault((mode, depth), []).append(row)
                print(f"round {r + 1} {mode} {depth}: {row['s']:.2f} s, read {row['read']}, {row['receives']} "
                      f"receives, {row['why'] or 'complete'}", flush=True)
                wait_idle(child.pid)  # a timed-out receive leaves moto busy: the next run must not pay for it
    finally:
        child.kill()
        child.wait()
    rows = []
    base = min(min(x["s"] for x in runs[("bounded", opts.depths[0])]), 1e9)
    for (mode, depth), xs in runs.items():
        s = [x["s"] for x in xs]
        last = xs[-1]
        rows.append([mode, f"{depth:,}", f"{min(s):.2f}-{max(s):.2f}", f"{min(s) / base:.1f}x",
                     f"{min(x['receives'] for x in xs)}-{max(x['receives'] for x in xs)}",
                     f"{min(x['read'] for x in xs)}-{max(x['read'] for x in xs)}", last["total"],
                     f"{last['attr_n']} x {last['attr_s'] / max(1, last['attr_n']):.2f}", f"{last['recv_s']:.2f}",
                     f"{min(x['shared_s'] for x in xs):.2f}", f"{last['found']}/3", f"{last['err']:+.0f}%",
                     last["why"] or "complete"])
    print(table(["read", "depth", "answer s (min-max)", "ratio (min)", "receive calls", "messages read", "total",
                 "GetQueueAttributes n x s", "ReceiveMessage s", "shared answer s", "groups found",
                 "Timeout estimate error", "incomplete because"], rows))
    print(f"end: {machine()}; wall {time.perf_counter() - t0:.0f} s")
    for (mode, depth), xs in runs.items():
        for note in xs[-1]["notes"]:
            if note.startswith(("sampled", "the queue changed")) or "receive" in note:
                print(f"note ({mode} {depth}): {note}")


if __name__ == "__main__":
    main()
