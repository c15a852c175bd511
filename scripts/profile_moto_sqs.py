"""Where moto's time goes per SQS request class at queue depth N (in-process moto, cProfile).

cProfile inflates absolute times several-fold: compare the rows, not the figures.

Usage: python scripts/profile_moto_sqs.py [1000 5000]
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from typing import Any

os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")

RECEIVES = 5


def fill(sqs: Any, url: str, n: int) -> None:
    """Put ``n`` messages (JSON body, one message attribute) in the queue at ``url``."""
    for start in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"n": start + i}),
             "MessageAttributes": {"ErrorCode": {"DataType": "String", "StringValue": "Timeout"}}}
            for i in range(10)])


def timed(fn: Any, messages: int) -> tuple[float, float, cProfile.Profile]:
    """Run ``fn`` under cProfile: (ms, ms per message, profile)."""
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(fn)
    ms = (time.perf_counter() - start) * 1000
    return ms, ms / messages, profile


def depth_rows(sqs: Any, depth: int) -> list[tuple[str, float, float, cProfile.Profile]]:
    """Profile receive (10 and 1), send batch, delete batch and delete one at ``depth``."""
    url = sqs.create_queue(QueueName=f"d{depth}")["QueueUrl"]
    target = sqs.create_queue(QueueName=f"t{depth}")["QueueUrl"]
    fill(sqs, url, depth)
    handles: list[str] = []

    def receive(count: int, **extra: Any) -> None:
        for _ in range(RECEIVES):
            got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=600, MaxNumberOfMessages=count,
                                      MessageAttributeNames=["All"], **extra)
            handles.extend(m["ReceiptHandle"] for m in got["Messages"])

    rows = []
    for label, count, extra in [("receive 10 (all attributes)", 10, {"AttributeNames": ["All"]}),
                                ("receive 1", 1, {})]:
        ms, per, prof = timed(lambda c=count, e=extra: receive(c, **e), RECEIVES * count)
        rows.append((label, ms / RECEIVES, per, prof))
    batch = [{"Id": str(i), "MessageBody": "x"} for i in range(10)]
    ms, per, prof = timed(lambda: sqs.send_message_batch(QueueUrl=target, Entries=batch), 10)
    rows.append(("send batch 10", ms, per, prof))
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles[:10])]
    ms, per, prof = timed(lambda: sqs.delete_message_batch(QueueUrl=url, Entries=entries), 10)
    rows.append(("delete batch 10", ms, per, prof))
    ms, per, prof = timed(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[10]), 1)
    rows.append(("delete 1", ms, per, prof))
    return rows


def main() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        for depth in [int(a) for a in sys.argv[1:]] or [1000, 5000]:
            rows = depth_rows(sqs, depth)
            print(f"\n## depth {depth}\n| request | ms/request | ms/message |\n|---|---:|---:|")
            for label, ms, per, _ in rows:
                print(f"| {label} | {ms:.1f} | {per:.2f} |")
            out = io.StringIO()
            pstats.Stats(rows[0][3], stream=out).sort_stats("tottime").print_stats(6)
            print(f"\n{rows[0][0]}, top self time:\n{out.getvalue().strip()}")


if __name__ == "__main__":
    main()
