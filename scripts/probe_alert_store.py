"""The alert store probe of issue 19 (item 7): 120 webhook posts of one alert with 250
labels x 3,990 characters each (a distinct fingerprint per post), against
`opsmcp serve --transport http` with the alerts toolset and the file store.

    python scripts/probe_alert_store.py [--posts 120] [--labels 250] [--chars 3990] [--runs 3]

Prints, per run and as min-max over the runs: the store file's size after the posts, the
server's RSS before and after them (psutil), and the latency of the first and the last post
(and the slowest). No AWS is needed: the AWS endpoint is a closed port (no sandbox starts).
The server binds 127.0.0.1 on a free port and is stopped at the end of each run.

The same token is set as OPSMCP_HTTP_TOKEN and OPSMCP_WEBHOOK_TOKEN, so the script also runs
against versions from before the webhook had its own credential (for a before/after).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OPSMCP, HttpServer, free_port, machine, rss_mib, table

TOKEN = "probe-token-" + "x" * 32


def payload(i: int, labels: int, chars: int) -> dict[str, object]:
    """Alertmanager's webhook body (version 4) with one alert of ``labels`` long labels."""
    big = {f"label_{n:03d}": chr(97 + n % 26) * chars for n in range(labels)}
    alert = {"status": "firing", "fingerprint": f"probe{i:05d}", "labels": {"alertname": f"Probe{i}", **big},
             "annotations": {"summary": "probe"}, "startsAt": "2026-12-01T08:00:00Z"}
    return {"version": "4", "status": "firing", "receiver": "opsmcp", "groupKey": "{}", "alerts": [alert]}


def run(posts: int, labels: int, chars: int) -> dict[str, float]:
    """One run on a fresh data directory; returns the figures."""
    data = Path(tempfile.mkdtemp(prefix="opsmcp-probe-alerts-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSMCP_", "AWS_"))}
    env.update(OPSMCP_DATA_DIR=str(data), OPSMCP_TOOLSETS="alerts", OPSMCP_ALERTMANAGER_URL="http://127.0.0.1:9",
               OPSMCP_AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_ACCESS_KEY_ID="probe", AWS_SECRET_ACCESS_KEY="probe",
               OPSMCP_HTTP_TOKEN=TOKEN, OPSMCP_WEBHOOK_TOKEN=TOKEN,
               OPSMCP_ALERTS_MAX_PAYLOAD_BYTES=str(4 * labels * (chars + 40) + 65536))
    port = free_port()
    server = HttpServer([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env, port)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/alertmanager"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(timeout=120) as client:
            assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            rss_before = rss_mib(server.pid)
            took = []
            for i in range(posts):
                body = payload(i, labels, chars)
                start = time.perf_counter()
                answer = client.post(url, json=body, headers=headers)
                took.append(time.perf_counter() - start)
                if answer.status_code != 200:
                    raise RuntimeError(f"post {i}: HTTP {answer.status_code}: {answer.text[:200]}")
            rss_after = rss_mib(server.pid)
        size = sum(p.stat().st_size for p in data.glob("alerts.json*"))
        return {"size_mb": size / 1e6, "rss_before": rss_before, "rss_after": rss_after, "first_s": took[0],
                "last_s": took[-1], "max_s": max(took)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=120)
    parser.add_argument("--labels", type=int, default=250)
    parser.add_argument("--chars", type=int, default=3_990)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(f"{args.posts} posts, each one alert with {args.labels} labels x {args.chars} characters\n")
    runs = [run(args.posts, args.labels, args.chars) for _ in range(args.runs)]
    keys = ["size_mb", "rss_before", "rss_after", "first_s", "last_s", "max_s"]
    rows: list[list[object]] = [[f"run {i + 1}", *(r[k] for k in keys)] for i, r in enumerate(runs)]
    rows.append(["min-max", *(f"{min(r[k] for r in runs):.2f}-{max(r[k] for r in runs):.2f}" for k in keys)])
    print(table(["", "alerts.json MB", "RSS before MiB", "RSS after MiB", "first post s", "last post s",
                 "slowest post s"], rows))
    print(f"\nload average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
