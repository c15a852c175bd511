"""The LocalStack tier: the compose stack's pieces run for real on this host (no Docker engine).

LocalStack 2026.3 from PyPI runs on a free loopback port (``tests/localstack_host.py``:
Python 3.13 venv, DynamoDB Local from npm on the system JDK, bound to loopback). What runs:

1. **The ready hooks, run by LocalStack itself** (``localstack/ready.d`` as its init
   directory): hook 10 installs opsmcp with the opensearch extra into a fresh venv and seeds
   the incident; hook 20 PUTs the index template and loads the 12,001 log lines with
   ``opsmcp logs load --to opensearch``. No OpenSearch server can run here, so hook 20 talks to
   a loopback stand-in (:class:`OpenSearchStandIn`) that answers only what the hook calls
   (index template, index exists/create, ``_bulk``, ``_refresh``) the way OpenSearch does,
   checks admin's basic auth, and records what arrived. LocalStack's init state must say
   both hooks SUCCESSFUL, and a rerun of hook 10 must find every part present.
2. **The triage path and an approved redrive** through the MCP client against LocalStack.
3. **``scripts/bench_redrive.py --endpoint-url``** against it (a small size; the figures in
   docs/performance.md come from larger runs of the same command).
4. **compose's services on this host**: opsmcp (compose's entrypoint and command, in a venv
   built with the Dockerfile's own ``pip install`` line, with compose's environment),
   Alertmanager and Prometheus (compose's entrypoints with Debian's binaries and the
   ``deploy/`` configs, container host names and paths mapped to this host), each polled
   with compose's own healthcheck command; LocalStack's healthcheck too. Prometheus must
   scrape opsmcp with the token and load the rules. Then ``opsmcp doctor`` in that venv, with
   compose's environment: every check passes except OpenSearch's reachability (no server:
   its URL points at a closed loopback port), which must fail as "could not reach", not as
   a missing package (the image used to lack the opensearch extra).

Without Python 3.13, a JDK, npm or cc the module skips saying which is missing (fails under
CI=1, where scripts/test installs everything).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from helpers import call

import localstack_host as lh
import promstack

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Seed-Pass-42!"
TOKEN = "compose-on-host-token-0123456789abcdef"  # 32+ characters: compose binds 0.0.0.0
WEBHOOK_TOKEN = "w" * 40  # Alertmanager's own credential (compose passes OPSMCP_WEBHOOK_TOKEN to both)
HOOKS_BUDGET = 900.0  # s: hook 10 builds a venv (pip, ~1-2 min on 2 cores) and seeds
pytestmark = pytest.mark.timeout(1800)


def _unavailable(reason: str) -> None:
    """Skip, or under CI (where scripts/test installs LocalStack) fail. No Python 3.13 always
    skips: neither scripts/test nor CI installs an interpreter (pyenv provides one here)."""
    if os.environ.get("CI") and lh.find_python313():
        pytest.fail(f"LocalStack tier cannot run: {reason}")
    pytest.skip(f"LocalStack tier: {reason}")


class OpenSearchStandIn:
    """A loopback HTTP server answering the five OpenSearch calls hook 20 makes, as OpenSearch
    does, for ``admin``/:data:`PASSWORD` only (401 otherwise); it records what arrived."""

    def __init__(self) -> None:
        self.templates: dict[str, Any] = {}
        self.created: dict[str, Any] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.refreshed = 0
        self.denied = 0
        stand_in = self
        expected = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _handle(self) -> None:
                body = self._body()
                if self.headers.get("Authorization") != expected:
                    stand_in.denied += 1
                    return self._answer(401, {"error": "Unauthorized"})
                path = self.path.split("?", 1)[0]
                if self.command == "PUT" and path.startswith("/_index_template/"):
                    stand_in.templates[path.rsplit("/", 1)[-1]] = json.loads(body)
                    return self._answer(200, {"acknowledged": True})
                if self.command == "HEAD" and path.count("/") == 1:
                    return self._answer(200 if path[1:] in stand_in.created else 404)
                if self.command == "PUT" and path.count("/") == 1:
                    stand_in.created[path[1:]] = json.loads(body or b"{}")
                    return self._answer(200, {"acknowledged": True, "index": path[1:]})
                if self.command == "POST" and path.endswith("/_refresh"):
                    stand_in.refreshed += 1
                    return self._answer(200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
                if self.command in ("POST", "PUT") and path.endswith("/_bulk"):
                    lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                    items = []
                    for action, doc in zip(lines[::2], lines[1::2], strict=True):
                        (op, meta), = action.items()
                        stand_in.docs[meta["_id"]] = doc
                        items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": 201,
                                           "result": "created"}})
                    return self._answer(200, {"took": 1, "errors": False, "items": items})
                return self._answer(400, {"error": f"the stand-in does not answer {self.command} {path}"})

            do_GET = do_PUT = do_POST = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DockerfileVenv:
    """A venv built as the Dockerfile builds the image's: its COPY sources into a build
    directory, then its ``RUN python -m venv /opt/venv && /opt/venv/bin/pip install ...`` line
    with ``/opt/venv`` mapped here and ``python`` a 3.11 (the image's ``python:3.11-slim``).
    :meth:`start` runs it in the background; :meth:`wait` returns the venv's ``bin``."""

    def __init__(self, work: Path) -> None:
        from dockerfile_parse import DockerfileParser

        parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
        steps = [(i["instruction"], i["value"]) for i in parser.structure]
        first, second = [n for n, (k, _) in enumerate(steps) if k == "FROM"][:2]
        build_stage = steps[first:second]
        self.run = next(v for k, v in build_stage if k == "RUN" and "pip install" in v)
        self.copies = [v.split() for k, v in build_stage if k == "COPY"]
        self.work = work
        self.venv = work / "venv"
        self.proc: subprocess.Popen[str] | None = None
        self.seconds = 0.0

    def start(self) -> DockerfileVenv:
        src = self.work / "src"
        src.mkdir(parents=True)
        for *sources, dest in self.copies:
            target = src / dest.removeprefix("./") if dest not in ("./", ".") else src
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        command = self.run.replace("/opt/venv", str(self.venv))
        env = dict(os.environ, PATH=f"{Path(sys.base_prefix) / 'bin'}:{os.environ['PATH']}")
        env.pop("VIRTUAL_ENV", None)
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(["sh", "-c", command], cwd=src, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return self

    def wait(self) -> Path:
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=900)
        self.seconds = time.monotonic() - self._t0
        assert self.proc.returncode == 0, f"the Dockerfile's pip install failed:\n{out[-3000:]}"
        return self.venv / "bin"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Stack:
    """The module's LocalStack (hooks finished), the OpenSearch stand-in, the image venv build."""

    ls: lh.LocalStack
    init: dict[str, Any]
    opensearch: OpenSearchStandIn
    image: DockerfileVenv
    hook_env: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("localstack")
    try:
        lh.install()
    except lh.Unavailable as exc:
        _unavailable(str(exc))
    image = DockerfileVenv(work / "image").start()  # in the background while the hooks run
    opensearch = OpenSearchStandIn()
    port = lh.free_port()
    hook_env = {
        "OPSMCP_SRC": str(ROOT), "OPSMCP_SEED_VENV": str(work / "seed-venv"), "OPSMCP_SEED_PYTHON": sys.executable,
        "OPSMCP_SEED_ENDPOINT_URL": f"http://127.0.0.1:{port}", "OPSMCP_SEED_DIR": str(ROOT / "localstack"),
        "OPENSEARCH_URL": opensearch.url, "OPENSEARCH_INITIAL_ADMIN_PASSWORD": PASSWORD,
        "OPSMCP_DATA_DIR": str(work / "hook-data"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    ls = None
    try:
        ls = lh.start(work, hooks=ROOT / "localstack" / "ready.d", port=port, env=hook_env)
        init = ls.wait_for_hooks(HOOKS_BUDGET)
        yield Stack(ls, init, opensearch, image, hook_env)
    except lh.Unavailable as exc:
        pytest.fail(str(exc))
    finally:
        if ls is not None:
            ls.stop()
        opensearch.close()
        image.kill()


def test_localstack_runs_the_ready_hooks_to_success(stack):
    """Regression: hook 10 installed opsmcp without extras, so hook 20 failed ("needs the
    opensearch-py package") and LocalStack never turned healthy."""
    scripts = {s["name"]: s["state"] for s in stack.init["scripts"]}
    assert scripts == {"10-opsmcp-seed.sh": "SUCCESSFUL", "20-opensearch-logs.sh": "SUCCESSFUL"}, stack.ls.tail(80)
    template = stack.opensearch.templates["opsmcp-logs"]
    assert template == json.loads((ROOT / "localstack" / "opensearch" / "index-template.json").read_text())
    assert len(stack.opensearch.docs) == 12_001 and stack.opensearch.refreshed >= 1
    assert stack.opensearch.denied == 0
    doc = next(d for d in stack.opensearch.docs.values() if d.get("trace_id"))
    assert {"@timestamp", "level", "service", "message", "trace_id"} <= set(doc)
    sqs = boto3.client("sqs", endpoint_url=stack.ls.url, region_name="us-east-1")
    names = {u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"]}
    assert {"order-queue-dlq", "payment-queue-dlq.fifo", "order-cancellation-queue-dlq"} <= names
    health = stack.ls.health()["services"]
    assert all(health[s] in ("running", "available") for s in ("sqs", "dynamodb", "cloudwatch")), health


def test_the_seed_hook_run_again_finds_every_part_and_writes_nothing(stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    out = subprocess.run([str(ROOT / "localstack" / "ready.d" / "10-opsmcp-seed.sh")], env={**env, **stack.hook_env},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already holds the scenario; nothing seeded" in out.stderr, out.stderr
    for part in ("queues: present", "messages: present", "orders: present (240 of 240", "metrics: present"):
        assert part in out.stderr, out.stderr
    assert "installing" not in out.stdout  # the venv with its extra is reused


def test_dynamodb_local_listens_on_loopback_only(stack):
    import psutil

    ls = psutil.Process(stack.ls.proc.pid)
    java = [p for p in ls.children(recursive=True) if "DynamoDBLocal.jar" in " ".join(p.cmdline())]
    assert java, "DynamoDB Local is not running under LocalStack"
    listening = [c.laddr.ip for p in java for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def test_the_triage_path_and_an_approved_redrive_on_localstack(stack, tmp_path):
    """Sync on purpose: it changes LocalStack's state, so it runs once (not per anyio backend)."""
    import anyio

    from opsmcp.config import Settings
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.server import build_server

    settings = Settings(aws_endpoint_url=stack.ls.url, aws_region="us-east-1", data_dir=tmp_path, allow_writes=True,
                        toolsets=["queues", "orders", "metrics"], write_approval="human")
    scenario = build_scenario()
    server, runtime = build_server(settings)
    anyio.run(_triage, server, runtime, scenario)
    sqs = boto3.client("sqs", endpoint_url=stack.ls.url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="order-cancellation-queue")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) == 8
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "redrive_dlq" in audit


async def _triage(server: Any, runtime: Any, scenario: Any) -> None:
    """list_queues, analyze_dlq, get_order, query_metrics, then a dry run, the real call
    (an approval request: OPSMCP_WRITE_APPROVAL=human) and a person's approval that moves it."""
    from mcp import Client

    from opsmcp.calls.identity import caller

    reset = caller.set("agent")
    async with Client(server) as client:
        listed = await call(client, "list_queues")
        depth = {q["name"]: q for q in listed["queues"]}
        assert depth["order-queue-dlq"]["visible"] == 28 and depth["payment-queue-dlq.fifo"]["visible"] == 19
        analysis = await call(client, "analyze_dlq", queue="order-queue-dlq")
        assert analysis["groups"] and analysis["messages_read"] >= 1
        order = await call(client, "get_order", order_id=scenario.orders[3]["orderId"])
        assert order["order"]["orderId"] == scenario.orders[3]["orderId"]
        metric = await call(client, "query_metrics", namespace="AWS/SQS",
                            metric_name="ApproximateNumberOfMessagesVisible",
                            dimensions={"QueueName": "order-queue-dlq"}, start="-6h")
        assert metric["point_count"] > 100 and metric["summary"]["max"] > 0, metric["summary"]
        preview = await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq")
        assert preview["matched"] == 8 and preview["moved"] == 0
        pending = await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq", dry_run=False)
        assert pending["status"] == "pending_approval" and pending["approval_id"] and pending["moved"] == 0
        assert pending["approval"]["bound"] == 8  # the request is held to what the preview showed
    caller.reset(reset)
    reset = caller.set("lead")  # a person other than the requester approves
    try:
        done = await runtime.approvals.desk.decide(pending["approval_id"], True)
    finally:
        caller.reset(reset)
    assert done.status == "done" and done.result is not None, done
    moved = done.result
    assert moved["moved"] == 8 and moved["remaining"] == 0 and not moved["failed"]


def test_bench_redrive_measures_localstack(stack):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_redrive.py"), "--endpoint-url", stack.ls.url,
                          "--sizes", "100", "--rounds", "1"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"the SQS endpoint {stack.ls.url}" in out.stdout and "load" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 100 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    naive, ours = (int(x) for x in cells[6].split(" / "))
    assert cells[7] == "0" and cells[8] == "0", row  # nothing lost, nothing duplicated
    assert ours * 3 < naive, row  # batching: far fewer requests than receive/send/delete one by one


# ------------------------------------------------------------------ compose on this host


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _host(value: str, mapping: dict[str, str]) -> str:
    """A compose string with ``$$`` unescaped and container names/paths mapped to this host."""
    value = value.replace("$$", "$")
    for old, new in mapping.items():
        value = value.replace(old, new)
    return value


def _healthy(test: list[str], mapping: dict[str, str], env: dict[str, str], budget: float) -> str:
    """Run a compose healthcheck (``CMD`` / ``CMD-SHELL``) on this host until it passes; return its output.

    Raises:
        AssertionError: it did not pass within ``budget`` seconds.
    """
    kind, *args = test
    argv = ["sh", "-c", _host(args[0], mapping)] if kind == "CMD-SHELL" else [_host(a, mapping) for a in args]
    deadline = time.monotonic() + budget
    while True:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            return out.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"healthcheck {argv} still failing after {budget:.0f} s: {out.stdout}{out.stderr}")
        time.sleep(0.5)  # a healthcheck's interval, shortened


def _spawn(entrypoint: list[str], command: list[str], mapping: dict[str, str], env: dict[str, str],
           log: Path) -> subprocess.Popen[bytes]:
    argv = [_host(a, mapping) for a in entrypoint + command]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def host_stack(stack, tmp_path_factory):
    """opsmcp, Alertmanager and Prometheus started with compose's entrypoints and commands on
    this host, each waited for with compose's own healthcheck; yields (urls, env, mapping)."""
    if not (promstack.PROMETHEUS and promstack.ALERTMANAGER):
        _unavailable(promstack.MISSING)
    work = tmp_path_factory.mktemp("compose-host")
    services = _compose()["services"]
    image_bin = stack.image.wait()
    names = ("opsmcp", "prometheus", "alertmanager", "opensearch")
    ports = dict(zip(names, lh.free_ports(len(names)), strict=True))
    token = work / "opsmcp-token"
    mapping = {
        "http://localstack:4566": stack.ls.url, "http://localhost:4566": stack.ls.url,
        "https://opensearch:9200": f"http://127.0.0.1:{ports['opensearch']}",  # nothing listens: no server here
        "http://prometheus:9090": f"http://127.0.0.1:{ports['prometheus']}",
        "http://alertmanager:9093": f"http://127.0.0.1:{ports['alertmanager']}",
        "alertmanager:9093": f"127.0.0.1:{ports['alertmanager']}",
        "localhost:9090": f"127.0.0.1:{ports['prometheus']}", "localhost:9093": f"127.0.0.1:{ports['alertmanager']}",
        "opsmcp:3001": f"127.0.0.1:{ports['opsmcp']}", "127.0.0.1:3001": f"127.0.0.1:{ports['opsmcp']}",
        "localhost:3001": f"127.0.0.1:{ports['opsmcp']}",
        "/tmp/opsmcp-token": str(token),
        "/etc/prometheus/prometheus.yml": str(work / "prometheus.yml"),
        "/etc/prometheus/rules.yml": str(ROOT / "deploy" / "prometheus" / "rules.yml"),
        "--storage.tsdb.path=/prometheus": f"--storage.tsdb.path={work / 'prom-data'}",
        "/etc/alertmanager/alertmanager.yml": str(work / "alertmanager.yml"),
        "--storage.path=/alertmanager": f"--storage.path={work / 'am-data'}",
        "/bin/prometheus": str(promstack.PROMETHEUS), "/bin/alertmanager": str(promstack.ALERTMANAGER),
    }
    for name, source in (("prometheus.yml", "deploy/prometheus/prometheus.yml"),
                         ("alertmanager.yml", "deploy/alertmanager/alertmanager.yml")):
        (work / name).write_text(_host((ROOT / source).read_text(), mapping))
    env_file = {"OPSMCP_HTTP_TOKEN": TOKEN, "OPSMCP_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
                "OPENSEARCH_INITIAL_ADMIN_PASSWORD": PASSWORD}
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / "deploy" / "opsmcp.env.example").read_text(), re.M))
    assert set(example) == set(env_file), "fill every variable deploy/opsmcp.env.example asks for"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "OPSMCP_", "COV_CORE_", "COVERAGE_", "VIRTUAL_ENV"))}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        svc = services["opsmcp"]
        ops_env = {**base, **env_file, **{k: _host(str(v), mapping) for k, v in svc["environment"].items()},
                   "PATH": f"{image_bin}:{base['PATH']}", "PYTHONUNBUFFERED": "1"}  # the Dockerfile's ENV
        ops_env["OPSMCP_DATA_DIR"] = str(work / "opsmcp-data")
        ops_env["OPSMCP_ALLOWED_HOSTS"] += f",127.0.0.1:{ports['opsmcp']}"
        command = ["127.0.0.1" if a == "0.0.0.0" else str(ports["opsmcp"]) if a == "3001" else a
                   for a in svc["command"]]
        procs.append(_spawn(svc["entrypoint"], command, mapping, ops_env, work / "opsmcp.log"))
        _healthy(svc["healthcheck"]["test"], mapping, ops_env, 120)
        for name in ("alertmanager", "prometheus"):  # compose's order: Prometheus depends on Alertmanager
            svc = services[name]
            listen = [f"--web.listen-address=127.0.0.1:{ports[name]}"]
            if name == "alertmanager":
                listen.append("--cluster.listen-address=")
            entry = [*svc["entrypoint"][:-1], svc["entrypoint"][-1] + " " + " ".join(listen)]
            procs.append(_spawn(entry, [], mapping, {**base, **env_file}, work / f"{name}.log"))
            _healthy(svc["healthcheck"]["test"], mapping, {**base, **env_file}, 120)
        yield {"ports": ports, "env": ops_env, "mapping": mapping, "work": work, "image_bin": image_bin}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_compose_healthchecks_pass_against_the_services_on_this_host(stack, host_stack):
    """LocalStack's healthcheck passes (it never did: hook 20 failed); opsmcp's, Prometheus's and
    Alertmanager's passed in the fixture; Prometheus scrapes opsmcp with the token and loaded the
    rules, and list_prometheus_metrics gives opsmcp's histogram its type and help."""
    import anyio

    from opsmcp.backends.prometheus import PrometheusBackend
    from opsmcp.config import Settings
    from opsmcp.toolsets.prometheus import PrometheusTools

    services = _compose()["services"]
    _healthy(services["localstack"]["healthcheck"]["test"], host_stack["mapping"], dict(os.environ), 60)
    prom = f"http://127.0.0.1:{host_stack['ports']['prometheus']}"
    settings = Settings(prometheus_url=prom, toolsets=["prometheus"], data_dir=host_stack["work"])
    tools = PrometheusTools(settings, PrometheusBackend.from_settings(settings))

    async def scraped() -> Any:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        url = f"http://127.0.0.1:{host_stack['ports']['opsmcp']}/mcp"
        async with Client(streamable_http_client(url, http_client=http)) as client:  # opsmcp's series exist
            assert not (await client.call_tool("list_queues", {})).is_error
        deadline = time.monotonic() + 90  # scrape and evaluation interval 15 s
        while True:
            up = await tools.backend.get("/api/v1/query", {"query": 'up{job="opsmcp"}'})
            listed = await tools.list_prometheus_metrics(match="opsmcp_tool_duration_seconds_bucket")
            groups = (await tools.backend.get("/api/v1/rules"))["groups"]
            health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            if (up.get("result") and up["result"][0]["value"][1] == "1" and listed.metrics and listed.metrics[0].type
                    and "unknown" not in health.values()) or time.monotonic() > deadline:
                return up, listed, health

            await anyio.sleep(1)

    up, listed, health = anyio.run(scraped)
    assert health == {"OpsmcpDown": "ok", "OpsmcpToolErrors": "ok"}, health  # both rules evaluated cleanly
    assert up["result"] and up["result"][0]["value"][1] == "1", up
    assert listed.metrics and listed.metrics[0].type == "histogram" and listed.metrics[0].help, listed


def test_doctor_in_the_dockerfile_venv_with_composes_environment(stack, host_stack):
    """Regression: the image was built without the opensearch extra while compose sets
    OPSMCP_LOG_BACKEND=opensearch (doctor: "FAIL log backend opensearch ... needs the
    opensearch-py package"). Run through compose's entrypoint with command ``doctor``:
    every check passes against LocalStack, Prometheus and Alertmanager on this host, except
    OpenSearch's reachability (no server here; its URL is a closed loopback port), which
    must fail as unreachable ("Cannot reach OpenSearch"), after the backend was built with the installed extra."""
    svc = _compose()["services"]["opsmcp"]
    env = dict(host_stack["env"], OPSMCP_DATA_DIR=str(host_stack["work"] / "doctor-data"))
    argv = [_host(a, host_stack["mapping"]) for a in svc["entrypoint"]] + ["doctor"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL opensearch: Cannot reach OpenSearch"), out.stdout + out.stderr
    assert "opensearch-py" not in out.stdout and out.returncode == 1
    for check in ("OK   sqs: ", "OK   orders table: orders ACTIVE", "OK   prometheus", "OK   alertmanager",
                  "OK   toolset logs", "OK   toolset queues", "OK   audit"):
        assert any(line.startswith(check) for line in lines), (check, out.stdout)
