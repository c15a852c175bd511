"""Benchmark: time from a person's approval to the write's outcome event (mode human).

Two real ``opsmcp serve --transport http --allow-writes`` child processes on one moto server
(its own process): one with ``OPSMCP_WRITE_APPROVAL=human``, one with ``prompt-or-confirm``
(the baseline: the same redrive, approved by the agent's own ``confirm=true`` + token).
Each round refills a DLQ with ``--messages`` dead letters and moves them back:

Each write moves what its own preview showed (moto's receive may return fewer than were
sent, so a preview can show fewer than ``--messages``); the table header says how many moved.

- human: the agent's real call creates the request (not timed); the clock starts when the
  approver's ``POST /api/approvals/{id}/approve`` is sent and stops when the write's
  ``outcome`` event (``type: write``, the request's call id) arrives on ``/events``; the
  POST's own answer time is shown too;
- baseline: the agent's dry run hands out the token (not timed); the clock starts when the
  real ``redrive_dlq`` call with ``confirm=true`` is sent and stops at its outcome event.

Rounds alternate (human, baseline, ...) because the machine is shared; the table gives
min / median / max over the rounds, the ratio of the medians, and the load average.

Usage: python scripts/bench_approval.py [--rounds 7] [--messages 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OPSMCP, HttpServer, free_port, machine, table

DLQ, SOURCE = "bench-approval-dlq", "bench-approval"


class Feed(threading.Thread):
    """Reads ``/events?types=write`` and keeps ``(arrival perf_counter, data)`` of each event."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.changed = threading.Condition()

    def run(self) -> None:
        with httpx.Client(timeout=None) as http, http.stream(
                "GET", f"{self.base}/events?types=write", headers={"Authorization": f"Bearer {self.token}"}) as resp:
            self.ready.set()
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    with self.changed:
                        self.events.append((time.perf_counter(), data))
                        self.changed.notify_all()

    def outcome_after(self, start: float, call_id: str | None, timeout: float = 120) -> float:
        """Arrival time of the first real ``outcome`` event after ``start`` (of ``call_id`` if given)."""
        def found() -> float | None:
            for at, data in self.events:
                if at >= start and data.get("phase") == "outcome" and not data.get("dry_run") and (
                        call_id is None or data.get("call_id") == call_id):
                    return at
            return None

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, timeout), "no outcome event"
            return found()  # type: ignore[return-value]


def serve(endpoint: str, mode: str, tokens: Path) -> HttpServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
    env.update(AWS_ENDPOINT_URL=endpoint, OPSMCP_DATA_DIR=tempfile.mkdtemp(prefix=f"opsmcp-bench-{mode}-"),
               OPSMCP_WRITE_APPROVAL=mode, OPSMCP_TOKENS_FILE=str(tokens), OPSMCP_TOOLSETS="queues")
    return HttpServer([OPSMCP, "serve", "--transport", "http", "--allow-writes", "--port", str(port)], env, port)


def fill(sqs: Any, url: str, n: int) -> None:
    for start in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"orderId": f"ord-{start + i}"})}
            for i in range(min(10, n - start))])


async def rounds(args: argparse.Namespace, human: HttpServer, base: HttpServer, tokens: dict[str, str],
                 sqs: Any, dlq_url: str) -> dict[str, list[float]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    root_h, root_b = human.url.removesuffix("/mcp"), base.url.removesuffix("/mcp")
    feeds = {"human": Feed(root_h, tokens["lead"]), "baseline": Feed(root_b, tokens["lead"])}
    for feed in feeds.values():
        feed.start()
        feed.ready.wait(30)
    out: dict[str, list[float]] = {"human": [], "human_answer": [], "baseline": [], "moved_human": [],
                                   "moved_baseline": []}
    agent = {"Authorization": f"Bearer {tokens['agent']}"}
    async with httpx2.AsyncClient(headers=agent, timeout=120) as h1, httpx2.AsyncClient(headers=agent,
                                                                                        timeout=120) as h2, \
            Client(streamable_http_client(human.url, http_client=h1)) as on_human, \
            Client(streamable_http_client(base.url, http_client=h2)) as on_base, \
            httpx.AsyncClient(base_url=root_h, timeout=120,
                              headers={"Authorization": f"Bearer {tokens['lead']}"}) as lead:
        args_ = {"queue": DLQ, "max_messages": args.messages}
        for _ in range(args.rounds):
            fill(sqs, dlq_url, args.messages)
            pending = (await on_human.call_tool("redrive_dlq", args_ | {"dry_run": False})).structured_content
            request_id = pending["approval_id"]  # type: ignore[index]
            start = time.perf_counter()
            answer = await lead.post(f"/api/approvals/{request_id}/approve")
            answered = time.perf_counter()
            assert answer.status_code == 200 and answer.json()["status"] == "done", answer.text
            out["moved_human"].append(answer.json()["result"]["moved"])
            out["human"].append((feeds["human"].outcome_after(start, request_id) - start) * 1000)
            out["human_answer"].append((answered - start) * 1000)

            fill(sqs, dlq_url, args.messages)
            preview = (await on_base.call_tool("redrive_dlq", args_)).structured_content
            token = preview["approval"]["token"]  # type: ignore[index]
            start = time.perf_counter()
            done = await on_base.call_tool("redrive_dlq", args_ | {"dry_run": False, "confirm": True,
                                                                   "approval_token": token})
            assert not done.is_error, done.content
            out["moved_baseline"].append(done.structured_content["moved"])  # type: ignore[index]
            out["baseline"].append((feeds["baseline"].outcome_after(start, None) - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each kind (default 7)")
    parser.add_argument("--messages", type=int, default=10, help="dead letters moved per round (default 10)")
    args = parser.parse_args()

    import boto3
    from moto_process import MotoProcess

    from opsmcp.transport.auth import add_token

    moto = MotoProcess().start()
    servers: list[HttpServer] = []
    try:
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1")
        dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(QueueName=SOURCE, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
        path = Path(tempfile.mkdtemp(prefix="opsmcp-bench-tokens-")) / "tokens.jsonl"
        tokens = {"agent": add_token(path, "agent", ["ops:read", "ops:write"]),
                  "lead": add_token(path, "lead", ["ops:read", "ops:approve"])}
        before = machine()
        servers = [serve(moto.endpoint, "human", path), serve(moto.endpoint, "prompt-or-confirm", path)]
        got = anyio.run(rounds, args, servers[0], servers[1], tokens, sqs, dlq_url)
    finally:
        for s in servers:
            s.stop()
        moto.stop()
    rows = []
    labels = {"human": "human: approve sent -> outcome event", "human_answer": "human: approve sent -> HTTP answer",
              "baseline": "prompt-or-confirm: confirm call sent -> outcome event"}
    for key, label in labels.items():
        xs = got[key]
        rows.append([label, min(xs), statistics.median(xs), max(xs)])
    print(f"{args.rounds} rounds each; {args.messages} dead letters added per round; messages moved per round "
          f"(held to each preview): human {statistics.mean(got['moved_human']):.1f}, baseline "
          f"{statistics.mean(got['moved_baseline']):.1f}")
    print(f"before: {before}")
    print(f"after:  {machine()}")
    print(table(["ms", "min", "median", "max"], rows))
    ratio = statistics.median(got["human"]) / statistics.median(got["baseline"])
    print(f"ratio of medians, human / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
