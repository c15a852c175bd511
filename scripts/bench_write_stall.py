"""Benchmark: how much a long write stalls the other sessions of one server.

One streamable-HTTP session calls a read tool in a loop (``--read``: ``list_queues``, which
reads SQS, or ``list_playbooks``, which reads only the catalog, so its latency is the event
loop's own delay) and records each call's latency while, on a second session of the same
``opsmcp serve --transport http --allow-writes``:

- ``idle``: nothing else runs (the baseline of the same server, same run);
- ``redrive``: a real ``redrive_dlq`` of ``--messages`` dead letters (dry run, then the
  approved call with ``confirm=true`` and its approval token);
- ``playbook``: a real run (``check=false``, approved the same way) of ``collect_diagnostics``.

Every write appends audit records (intent, progress every few reports, outcome): to the
JSON Lines file (``--audit file``: write + fsync) or to a DynamoDB table on the same moto
(``--audit dynamodb``). Where those appends run on the event loop, every other session
waits for them; that shows in the reader's p99.

``--base DIR`` names another source tree (e.g. ``git archive <commit> src | tar -x -C DIR``):
each round then runs the same phases against a server importing that tree (``base``) and
against this one (``this``), interleaved, so the ratio is measured under the same load.
moto runs in its own process with the receive fix of ``moto_retention_fix.py`` (a receive
costs the same at any depth), so the redrive is long because it is large, not because moto
slows down. Every round checks that the redrive lost nothing.

Usage: python scripts/bench_write_stall.py [--base DIR] [--tree DIR] [--messages 3000] [--rounds 3]
       [--audit file|dynamodb] [--read list_queues|list_playbooks]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, os.path.dirname(__file__))
from bench_redrive import check_and_clean, client, make_queues, start_moto_process
from benchlib import OPSMCP, HttpServer, free_port, machine, pct, table

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"approval_token=(\S+)")
AUDIT_TABLE = "opsmcp-audit-bench"


def serve(src: Path, endpoint: str, audit: str, data_dir: str) -> HttpServer:
    """``opsmcp serve`` importing opsmcp from ``src``, writes enabled, on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
    env.update(PYTHONPATH=str(src), AWS_ENDPOINT_URL=endpoint, OPSMCP_TOOLSETS="queues,playbooks",
               OPSMCP_DATA_DIR=data_dir)
    if audit == "dynamodb":
        env["OPSMCP_AUDIT_TABLE"] = AUDIT_TABLE
    return HttpServer([OPSMCP, "serve", "--transport", "http", "--port", str(port), "--allow-writes"], env, port)


async def approved(session: Any, tool: str, args: dict[str, Any], flag: str) -> float:
    """The preview of ``tool`` (``flag`` true), then the approved real call with its token;
    returns the real call's seconds. Raises when either answers an error."""
    preview = await session.call_tool(tool, args)
    text = " ".join(getattr(c, "text", "") for c in preview.content)
    found = TOKEN.search(text)
    if preview.is_error or not found:
        raise RuntimeError(f"{tool} preview failed: {text[:300]}")
    start = time.perf_counter()
    real = await session.call_tool(tool, {**args, flag: False, "confirm": True, "approval_token": found.group(1)})
    if real.is_error:
        raise RuntimeError(f"{tool} failed: {' '.join(getattr(c, 'text', '') for c in real.content)[:300]}")
    return time.perf_counter() - start


async def reads_during(url: str, writer: Any, idle_seconds: float, read: str) -> tuple[list[float], float]:
    """Latencies (ms) of ``read`` calls on their own session while ``writer`` (an async
    callable taking a session, or None for ``idle_seconds`` of nothing) runs on another."""
    from mcp import Client

    latencies: list[float] = []
    done = anyio.Event()
    took = 0.0
    async with Client(url) as reader, Client(url) as other:
        args = {"prefix": "bench"} if read == "list_queues" else {}
        await reader.call_tool(read, args)  # warm: clients, boto3, the catalog

        async def reads() -> None:
            while not done.is_set():
                start = time.perf_counter()
                result = await reader.call_tool(read, args)
                latencies.append((time.perf_counter() - start) * 1000)
                if result.is_error:
                    raise RuntimeError(f"{read} failed: {result.content}")

        async def write() -> None:
            nonlocal took
            try:
                if writer is None:
                    await anyio.sleep(idle_seconds)
                else:
                    took = await writer(other)
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reads)
            tg.start_soon(write)
    return latencies, took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another source tree to compare with (its src/ or the tree)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree measured as 'this' (default: here)")
    parser.add_argument("--read", default="list_queues", choices=["list_queues", "list_playbooks"],
                        help="the read call timed: list_queues (SQS) or list_playbooks (no backend: only the "
                             "event loop's own delays)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--audit", choices=["file", "dynamodb"], default="file")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    opts = parser.parse_args()
    def src_of(tree: Path) -> Path:
        return tree / "src" if (tree / "src" / "opsmcp").is_dir() else tree

    variants = [("this", src_of(opts.tree))]
    if opts.base:
        variants.insert(0, ("base", src_of(opts.base)))
    proc, endpoint = start_moto_process(fix=True)
    sqs = client(endpoint)
    if opts.audit == "dynamodb":
        import boto3

        sys.path.insert(0, str(ROOT / "src"))
        from opsmcp.sandbox.seed import create_audit_table

        create_audit_table(boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1"), AUDIT_TABLE)
    results: dict[tuple[str, str], list[tuple[float, float, float, int, float]]] = {}
    loads: list[float] = []
    try:
        for _ in range(opts.rounds):
            for label, src in variants:
                source, dlq, dlq_url, expected = make_queues(sqs, opts.messages)
                data_dir = tempfile.mkdtemp(prefix="opsmcp-stall-")
                server = serve(src, endpoint, opts.audit, data_dir)
                try:
                    async def redrive(session: Any, dlq: str = dlq) -> float:
                        return await approved(session, "redrive_dlq",
                                              {"queue": dlq, "max_messages": opts.messages}, "dry_run")

                    async def playbook(session: Any) -> float:
                        return await approved(session, "run_playbook", {"name": "collect_diagnostics"}, "check")

                    for phase, writer in (("idle", None), ("redrive", redrive), ("playbook", playbook)):
                        lat, took = await reads_during(server.url, writer, opts.idle_seconds, opts.read)
                        results.setdefault((label, phase), []).append(
                            (statistics.median(lat), pct(lat, .99), max(lat), len(lat), took))
                        loads.append(os.getloadavg()[0])
                finally:
                    server.stop()
                    shutil.rmtree(data_dir, ignore_errors=True)
                check_and_clean(sqs, source, dlq_url, expected)
    finally:
        proc.kill()
        proc.wait()
    print(f"== {opts.read} latency on one session while another writes (audit: {opts.audit}, "
          f"{opts.messages} messages, {opts.rounds} rounds) ==\n{machine()}; "
          f"1-min load during the runs {min(loads):.1f}-{max(loads):.1f}")
    rows = []
    for (label, phase), runs in results.items():
        p50s, p99s, maxes, counts, took = zip(*runs, strict=True)
        idle = results[(label, "idle")]
        ratio = statistics.median(p99s) / statistics.median(r[1] for r in idle)
        rows.append([label, phase, f"{min(counts)}-{max(counts)}", f"{min(p50s):.1f}-{max(p50s):.1f}",
                     f"{min(p99s):.1f}-{max(p99s):.1f}", f"{min(maxes):.0f}-{max(maxes):.0f}", f"{ratio:.2f}",
                     f"{min(took):.1f}-{max(took):.1f}" if phase != "idle" else ""])
    print(table(["server", "during", "calls", "p50 ms", "p99 ms", "max ms", "p99 / idle p99", "write s"], rows))
    if len(variants) == 2:
        for phase in ("redrive", "playbook"):
            b = statistics.median(r[1] for r in results[("base", phase)])
            t = statistics.median(r[1] for r in results[("this", phase)])
            print(f"p99 during {phase}: this / base = {t / b:.2f} (medians over rounds: {t:.1f} ms vs {b:.1f} ms)")


if __name__ == "__main__":
    anyio.run(main)
