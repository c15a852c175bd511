"""Benchmark redrive throughput: opsmcp's batched mover vs a naive one-message-at-a-time mover.

Both move the same DLQ contents (JSON bodies with message attributes) back to the source
queue on the same moto server, which runs in its own process (as a real backend would).
Rounds are interleaved (naive, opsmcp, naive, opsmcp, ...) because the machine is noisy;
every run starts from a freshly filled DLQ and is checked for zero loss (the multiset of
bodies and attributes in the source equals what was put in the DLQ; the DLQ ends empty).

For opsmcp two figures: the move alone (the real call) and preview + move (a real move
needs the dry run the user approves first).

Stock moto receives in O(queue depth) per message, for any batch size (see
``scripts/moto_retention_fix.py``), which caps the ratio; ``--moto-fix`` measures both movers
on a moto without that cost. ``--endpoint-url`` measures another SQS endpoint instead of a
moto this script starts, e.g. LocalStack on this host (``python tests/localstack_host.py
serve --port 4566``); queues are named ``bench-<random>`` and deleted after each round.

Usage: python scripts/bench_redrive.py [--sizes 1000 5000] [--rounds 2] [--moto-fix | --endpoint-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")


def start_moto_process(fix: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process on a free loopback port; waits until it answers.
    ``fix``: with :mod:`moto_retention_fix` (receive cost independent of queue depth)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = [str(Path(__file__).with_name("moto_retention_fix.py"))] if fix else ["-m", "moto.server"]
    proc = subprocess.Popen([sys.executable, *server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))


def make_queues(sqs: Any, n: int) -> tuple[str, str, str, Counter[tuple[str, str]]]:
    """A fresh source + DLQ pair, the DLQ filled with ``n`` messages. Returns (names..., expected multiset)."""
    run = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"bench-{run}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName=f"bench-{run}", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})})
    expected: Counter[tuple[str, str]] = Counter()
    for start in range(0, n, 10):
        entries = []
        for i in range(start, min(n, start + 10)):
            body = json.dumps({"orderId": f"o-{run}-{i}", "type": "OrderCreated", "n": i})
            attrs = {"ErrorCode": {"DataType": "String", "StringValue": "Timeout" if i % 2 else "Declined"}}
            entries.append({"Id": str(i - start), "MessageBody": body, "MessageAttributes": attrs})
            expected[(body, json.dumps({k: v["StringValue"] for k, v in attrs.items()}, sort_keys=True))] += 1
        sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
    return f"bench-{run}", f"bench-{run}-dlq", dlq, expected


def check_and_clean(sqs: Any, source: str, dlq_url: str, expected: Counter[tuple[str, str]]) -> int:
    """Zero loss: the source holds every expected (body, attributes), the DLQ is empty. Returns duplicates."""
    src = sqs.get_queue_url(QueueName=source)["QueueUrl"]
    got: Counter[tuple[str, str]] = Counter()
    while True:
        msgs = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=43_200,
                                   MessageAttributeNames=["All"]).get("Messages", [])  # never seen twice
        if not msgs:
            break
        for m in msgs:
            attrs = {k: v["StringValue"] for k, v in (m.get("MessageAttributes") or {}).items()}
            got[(m["Body"], json.dumps(attrs, sort_keys=True))] += 1
    a = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    left = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
    lost = expected - got
    if lost or left:
        raise SystemExit(f"LOSS: {sum(lost.values())} message(s) missing from {source}, {left} left in the DLQ")
    sqs.delete_queue(QueueUrl=src)
    sqs.delete_queue(QueueUrl=dlq_url)
    return sum((got - expected).values())


def naive_move(sqs: Any, dlq_url: str, source: str) -> int:
    """Receive one, send one, delete one, until the DLQ is empty. Returns requests made."""
    src = sqs.get_queue_url(QueueName=source)["QueueUrl"]
    requests = 1
    empty = 0
    while empty < 3:
        msgs = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=1, VisibilityTimeout=120,
                                   MessageAttributeNames=["All"]).get("Messages", [])
        requests += 1
        if not msgs:
            empty += 1
            continue
        empty = 0
        m = msgs[0]
        attrs = {k: {f: v for f, v in a.items() if f in ("DataType", "StringValue", "BinaryValue")}
                 for k, a in (m.get("MessageAttributes") or {}).items()}
        sqs.send_message(QueueUrl=src, MessageBody=m["Body"], MessageAttributes=attrs)
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
        requests += 2
    return requests


class Counting:
    """Counts the HTTP requests a boto3 client makes (botocore ``before-send`` hook)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, **_: Any) -> None:
        self.n += 1


def opsmcp_move(endpoint: str, data_dir: Path, dlq: str) -> tuple[float, float, int, int]:
    """Dry run + real redrive through QueueTools. Returns (preview s, move s, moved, requests)."""
    from opsmcp.backends.aws import AwsClients
    from opsmcp.backends.sqs import SqsBackend
    from opsmcp.config import Settings
    from opsmcp.toolsets.queues import QueueTools

    settings = Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", data_dir=data_dir, toolsets=["queues"])
    clients = AwsClients(settings)
    counter = Counting()
    for c in (clients.client("sqs"), clients.client("sqs", retries=False)):
        c.meta.events.register("before-send.sqs", counter)
    tools = QueueTools(SqsBackend(clients))

    async def run() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        preview = await tools.redrive(dlq, None, 10_000, None, dry_run=True)
        t1 = time.perf_counter()
        real = await tools.redrive(dlq, None, preview.matched, None, dry_run=False)
        t2 = time.perf_counter()
        if real.status != "complete":
            raise SystemExit(f"redrive ended {real.status}: {real.notes}")
        return t1 - t0, t2 - t1, real.moved

    preview_s, move_s, moved = anyio.run(run)
    return preview_s, move_s, moved, counter.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="DLQ sizes (messages)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size")
    parser.add_argument("--moto-fix", action="store_true",
                        help="run moto with scripts/moto_retention_fix.py (receive cost independent of depth)")
    parser.add_argument("--endpoint-url", help="measure this SQS endpoint (e.g. LocalStack) instead of starting moto")
    args = parser.parse_args()
    if args.endpoint_url and args.moto_fix:
        parser.error("--moto-fix applies to the moto this script starts, not to --endpoint-url")
    from benchlib import machine

    before = machine()
    proc: subprocess.Popen[bytes] | None = None
    if args.endpoint_url:
        endpoint = args.endpoint_url.rstrip("/")
    else:
        proc, endpoint = start_moto_process(args.moto_fix)
    sqs = client(endpoint)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.sizes:
                naive, move, both, naive_req, ops_req, dups = [], [], [], [], [], 0
                for _ in range(args.rounds):
                    source, _, dlq_url, expected = make_queues(sqs, n)
                    t = time.perf_counter()
                    naive_req.append(naive_move(sqs, dlq_url, source))
                    naive.append(n / (time.perf_counter() - t))
                    dups += check_and_clean(sqs, source, dlq_url, expected)

                    source, dlq, dlq_url, expected = make_queues(sqs, n)
                    preview_s, move_s, moved, requests = opsmcp_move(endpoint, Path(tmp), dlq)
                    assert moved == n, (moved, n)
                    move.append(n / move_s)
                    both.append(n / (preview_s + move_s))
                    ops_req.append(requests)
                    dups += check_and_clean(sqs, source, dlq_url, expected)
                    print(f"  n={n}: naive {naive[-1]:.1f} msg/s, opsmcp move {move[-1]:.1f} msg/s "
                          f"(preview+move {both[-1]:.1f}); requests {naive_req[-1]} / {ops_req[-1]}; "
                          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
                rows.append((n, naive, move, both, naive_req, ops_req, dups))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    if args.endpoint_url:
        backend = f"the SQS endpoint {endpoint}"
    else:
        backend = ("moto with the retention fix" if args.moto_fix else "stock moto") + " server in its own process"
    print(f"redrive throughput, {backend}, {args.rounds} interleaved round(s): medians, ratios per round min-max")
    print(f"before: {before}")
    print(f"after:  {machine()}")
    print("| messages | naive msg/s | opsmcp move msg/s | ratio (min-max) | opsmcp preview+move msg/s | "
          "ratio (min-max) | requests naive / opsmcp | lost | duplicates |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, nv, mv, bo, nr, orq, dups in rows:
        move_ratios = [m / v for m, v in zip(mv, nv, strict=True)]
        both_ratios = [b / v for b, v in zip(bo, nv, strict=True)]
        print(f"| {n} | {statistics.median(nv):.1f} | {statistics.median(mv):.1f} | "
              f"{statistics.median(move_ratios):.1f}x ({min(move_ratios):.1f}-{max(move_ratios):.1f}) | "
              f"{statistics.median(bo):.1f} | "
              f"{statistics.median(both_ratios):.1f}x ({min(both_ratios):.1f}-{max(both_ratios):.1f}) | "
              f"{statistics.median(nr):.0f} / {statistics.median(orq):.0f} | 0 | {dups} |")


if __name__ == "__main__":
    main()
