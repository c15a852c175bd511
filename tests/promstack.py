"""Real Prometheus and Alertmanager (Debian's packages) for tests, on free loopback ports.

:func:`write_openmetrics` generates six hours of history with known values;
:func:`start_prometheus` backfills it with ``promtool tsdb create-blocks-from openmetrics``
and starts ``prometheus`` on it; :func:`start_alertmanager` starts
``prometheus-alertmanager`` with a webhook receiver. Both wait for ``/-/ready`` with a
bounded poll and are stopped by the caller (``proc.terminate()``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
MISSING = (
    "Prometheus/Alertmanager binaries are missing: apt-get install -y prometheus prometheus-alertmanager"
)
READY_BUDGET = 60.0  # seconds a server may take to become ready on a loaded 2-core machine

HOURS = 6
STEP = 60  # one sample a minute
N_POINTS = HOURS * 60  # 360 samples per series
N_QUEUES = 24  # queue_depth has one series per queue: the 24-series query
SPIKE_AT = 200  # index of the latency spike


@dataclass
class History:
    """The generated series: ``end`` is the newest sample's Unix time."""

    end: int

    @property
    def start(self) -> int:
        """The oldest sample's Unix time."""
        return self.end - (N_POINTS - 1) * STEP

    def t(self, i: int) -> int:
        """Unix time of sample ``i``."""
        return self.start + i * STEP


def dlq_depth(i: int) -> float:
    """The DLQ ramps by 2 messages a minute (120 an hour): 0, 2, 4, ... 718."""
    return 2.0 * i


def error_rate(i: int) -> float:
    """0.5 errors/s for the first four hours, then a step to 5 for the last two."""
    return 0.5 if i < 240 else 5.0


def latency(i: int) -> float:
    """0.1 s, with one spike of 2.5 s at sample SPIKE_AT."""
    return 2.5 if i == SPIKE_AT else 0.1


def processed_total(i: int) -> float:
    """A counter: 10 orders a minute."""
    return 10.0 * i


def queue_depth(q: int, i: int) -> float:
    """24 queues: queue q holds q + (i % 10)."""
    return float(q + i % 10)


def write_openmetrics(path: Path, end: int) -> History:
    """Write the history ending at Unix time ``end`` (a multiple of 60) as OpenMetrics text."""
    hist = History(end)
    lines = [
        "# HELP sqs_dlq_depth Messages visible in a dead-letter queue.",
        "# TYPE sqs_dlq_depth gauge",
    ]
    lines += [f'sqs_dlq_depth{{queue="order-queue-dlq"}} {dlq_depth(i)} {hist.t(i)}' for i in range(N_POINTS)]
    lines += ["# HELP app_errors_per_second Errors per second by service.", "# TYPE app_errors_per_second gauge"]
    lines += [f'app_errors_per_second{{service="order-processor"}} {error_rate(i)} {hist.t(i)}'
              for i in range(N_POINTS)]
    lines += ["# HELP app_latency_seconds Request latency.", "# TYPE app_latency_seconds gauge"]
    lines += [f'app_latency_seconds{{service="order-processor"}} {latency(i)} {hist.t(i)}'
              for i in range(N_POINTS)]
    lines += ["# HELP orders_processed Orders processed.", "# TYPE orders_processed counter"]
    lines += [f'orders_processed_total{{service="order-processor"}} {processed_total(i)} {hist.t(i)}'
              for i in range(N_POINTS)]
    lines += ["# HELP queue_depth Messages visible per queue.", "# TYPE queue_depth gauge"]
    for q in range(N_QUEUES):
        lines += [f'queue_depth{{queue="q{q:02d}",team="t{q % 3}"}} {queue_depth(q, i)} {hist.t(i)}'
                  for i in range(N_POINTS)]
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")
    return hist


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, budget: float = READY_BUDGET) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``budget`` seconds pass."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"{url} not ready within {budget} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` and wait for it (kill after 10 s)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Server:
    """A started server: its URL and process."""

    url: str
    proc: subprocess.Popen[bytes]


def start_prometheus(
    work: Path, *, end: int, rules: str | None = None, alertmanager: str | None = None
) -> tuple[Server, History]:
    """Backfill the history ending at ``end`` into ``work/data`` and start Prometheus on it.

    ``rules`` (YAML text) becomes a rules file evaluated every second; ``alertmanager``
    (``host:port``) receives its alerts.
    """
    assert PROMETHEUS and PROMTOOL, MISSING
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    hist = write_openmetrics(work / "history.om", end)
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(work / "history.om"), str(data)],
                   check=True, capture_output=True, timeout=300)
    port = free_port()
    # Prometheus scrapes itself every second: metadata (/api/v1/metadata) exists only for
    # scraped metrics, never for backfilled ones.
    config = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s",
              "scrape_configs:", "  - job_name: prometheus", "    static_configs:",
              f"      - targets: ['127.0.0.1:{port}']"]
    if rules:
        (work / "rules.yml").write_text(rules)
        config += ["rule_files:", f"  - {work / 'rules.yml'}"]
    if alertmanager:
        config += ["alerting:", "  alertmanagers:", "    - static_configs:", f"        - targets: ['{alertmanager}']"]
    (work / "prometheus.yml").write_text("\n".join(config) + "\n")
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
         # alerts evaluated before the notifier has discovered Alertmanager (~5 s) are sent
         # again only after this delay (default 1 m)
         "--rules.alert.resend-delay=2s"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", proc, log)
    return Server(url, proc), hist


def start_alertmanager(work: Path, webhook_url: str, token: str, port: int | None = None) -> Server:
    """Start Alertmanager sending every alert to ``webhook_url`` with a bearer ``token``.

    Groups by fingerprint-carrying label ``alertname``, waits 0 s before the first
    notification and re-sends every second, so tests see repeats (de-duplication).
    """
    assert ALERTMANAGER, MISSING
    work.mkdir(parents=True, exist_ok=True)
    (work / "alertmanager.yml").write_text(
        "route:\n"
        "  receiver: opsmcp\n"
        "  group_by: ['alertname']\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 2s\n"
        "receivers:\n"
        "  - name: opsmcp\n"
        "    webhook_configs:\n"
        f"      - url: '{webhook_url}'\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        f"            credentials: '{token}'\n"
    )
    port = port or free_port()
    log = work / "alertmanager.log"
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={work / 'alertmanager.yml'}", f"--storage.path={work / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", proc, log)
    return Server(url, proc)



class OpsmcpHttp:
    """opsmcp's HTTP app (``build_app``) served by uvicorn in a thread on a free port."""

    def __init__(self, settings: Any, port: int | None = None) -> None:
        import uvicorn

        from opsmcp.server import build_server
        from opsmcp.transport.app import build_app

        self.mcp, self.runtime = build_server(settings)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_app(self.mcp, self.runtime), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> OpsmcpHttp:
        self.thread.start()
        deadline = time.monotonic() + READY_BUDGET
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("opsmcp HTTP server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
