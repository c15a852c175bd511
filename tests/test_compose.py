"""compose.yaml, the Dockerfile, the deploy configs and the LocalStack hooks, validated
without a Docker engine (none runs here).

* compose.yaml against the Compose Specification's JSON schema (vendored in
  tests/fixtures/compose-spec with its source), plus what the schema cannot say:
  depends_on targets exist, ``service_healthy`` targets have healthchecks, bind-mounted
  files exist;
* every service, port and environment variable the README's "Full stack" section names
  is in compose.yaml, and every ``OPSMCP_*`` variable there is a real setting;
* the Dockerfile's instructions, parsed with dockerfile-parse;
* Prometheus's config and rules with ``promtool``, Alertmanager's with ``amtool``;
* the LocalStack ready hooks with ``bash -n``.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from opsmcp.config import Settings

from helpers import serving

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


def test_compose_validates_against_the_compose_spec_schema(compose):
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("mutate", [
    lambda c: c["services"]["opsmcp"]["depends_on"]["localstack"].update(condition="when_ready"),
    lambda c: c["services"]["opsmcp"].update(healthcheck={"test": ["CMD", "true"], "every": "10s"}),
    lambda c: c["services"]["opsmcp"].update(ports="3001:3001"),
    lambda c: c["services"].update({"bad name!": {"image": "x"}}),
])
def test_the_schema_check_catches_broken_files(compose, mutate):
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert list(_validator().iter_errors(broken)), "the vendored schema accepted a broken compose file"


def test_services_dependencies_and_mounts(compose):
    services = compose["services"]
    assert {"localstack", "opensearch", "opensearch-dashboards", "prometheus", "alertmanager", "ollama",
            "ollama-pull", "opsmcp"} <= set(services)
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0]
            if source == "/var/run/docker.sock":  # promtail reads the containers' logs through it
                assert name == "promtail" and volume.endswith(":ro")
                continue
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        for env_file in svc.get("env_file") or []:
            assert env_file == "deploy/opsmcp.env" and (ROOT / "deploy" / "opsmcp.env.example").exists()
    assert services["opsmcp"]["depends_on"]["localstack"]["condition"] == "service_healthy"  # seeded first
    assert services["ollama-pull"]["entrypoint"] == ["ollama", "pull", "qwen3:8b"]
    hooks = services["localstack"]["volumes"]
    assert "./localstack/ready.d:/etc/localstack/init/ready.d:ro" in hooks
    assert services["opsmcp"]["build"]["dockerfile"] == "Dockerfile"


def _environment(compose: dict[str, Any]) -> dict[str, str]:
    names: dict[str, str] = {}
    for svc in compose["services"].values():
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        names.update({k: str(v) for k, v in items})
    example = (ROOT / "deploy" / "opsmcp.env.example").read_text()
    names.update(dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.M)))
    return names


def test_every_opsmcp_variable_is_a_real_setting(compose):
    fields = {f"OPSMCP_{name.upper()}" for name in Settings.model_fields}
    used = {k for k in _environment(compose) if k.startswith("OPSMCP_")}
    used |= set(re.findall(r"OPSMCP_[A-Z0-9_]*[A-Z0-9]", (ROOT / "compose.yaml").read_text()))
    hooks_own = {"OPSMCP_SRC", "OPSMCP_SEED_VENV", "OPSMCP_SEED_PYTHON", "OPSMCP_SEED_ENDPOINT_URL",
                 "OPSMCP_SEED_DIR"}  # the hooks' own variables (where the repository, venv, seed files are)
    for hook in (ROOT / "localstack" / "ready.d").glob("*.sh"):
        used |= set(re.findall(r"OPSMCP_[A-Z0-9_]*[A-Z0-9]", hook.read_text())) - hooks_own
    used -= hooks_own
    unknown = used - fields
    assert not unknown, f"not opsmcp settings: {sorted(unknown)}"
    assert {"OPSMCP_PROMETHEUS_URL", "OPSMCP_ALERTMANAGER_URL", "OPSMCP_HTTP_TOKEN"} <= used


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def test_readme_full_stack_names_only_what_compose_has(compose):
    section = _section("Full stack")
    services = compose["services"]
    named = set(re.findall(r"^\| `([a-z][a-z0-9-]*)` \|", section, re.M))
    assert named == set(services), f"README table vs compose services: {named ^ set(services)}"
    published = {int(p.split(":")[0]) for svc in services.values() for p in svc.get("ports") or []}
    ports = {int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", section)}
    assert ports and ports <= published, f"README ports not published: {ports - published}"
    env = _environment(compose)
    variables = set(re.findall(r"`((?:OPSMCP|OPENSEARCH|AWS)_[A-Z0-9_]+)", section))
    assert variables and variables <= set(env), f"README variables not in compose: {variables - set(env)}"


def test_readme_prometheus_settings_are_real():
    section = _section("Prometheus and Alertmanager")
    names = set(re.findall(r"`OPSMCP_([A-Z0-9_]+)`", section))
    fields = {name.upper() for name in Settings.model_fields}
    assert names and names <= fields, f"unknown settings in README: {names - fields}"
    for needed in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "ALERTS_TABLE", "ALERTS_MAX_STORED"):
        assert needed in names


def test_dockerfile_instructions():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    froms = [v for k, v in instructions if k == "FROM"]
    assert froms and all(re.match(r"python:3\.1[1-3]-slim\b", v) for v in froms), froms
    assert parser.baseimage.startswith("python:3.11-slim")
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final stage must run as a non-root user"
    last_user = max(i for i, (k, _) in enumerate(instructions) if k == "USER")
    assert all(k not in ("RUN",) for k, _ in instructions[last_user:]), "nothing runs as root after USER"
    run = " ".join(v for k, v in instructions if k == "RUN")
    # compose runs the image with OPSMCP_LOG_BACKEND=opensearch: the image has that extra, not the sandbox
    assert "pip install" in run and "sandbox" not in run
    assert re.findall(r"\[([a-z,]+)\]", run.split("pip install", 1)[1]) == ["opensearch"], run
    assert ("EXPOSE", "3001") in instructions
    assert any(k == "HEALTHCHECK" and "/readyz" in v for k, v in instructions)  # readiness, not liveness
    assert json.loads(next(v for k, v in instructions if k == "ENTRYPOINT")) == ["opsmcp"]
    for k, v in instructions:
        if k == "COPY" and not v.startswith("--from"):
            for source in v.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} missing"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "deploy/opsmcp.env" in ignored and ".venv" in ignored


@pytest.mark.skipif(not shutil.which("promtool") or not shutil.which("amtool"),
                    reason="promtool/amtool missing: apt-get install -y prometheus prometheus-alertmanager")
def test_prometheus_and_alertmanager_configs_check(tmp_path):
    rules = ROOT / "deploy" / "prometheus" / "rules.yml"
    out = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS: 2 rules found" in out.stdout, out.stdout + out.stderr
    # the config names container paths: check a copy pointing at the repository's files
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    token = tmp_path / "token"
    token.write_text("t")
    config = config.replace("/etc/prometheus/rules.yml", str(rules)).replace("/tmp/opsmcp-token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    am = (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
    assert "http://opsmcp:3001/webhooks/alertmanager" in am
    (tmp_path / "am.yml").write_text(am.replace("/tmp/opsmcp-token", str(token)))
    out = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_localstack_hooks_are_executable_bash_that_calls_opsmcp():
    hooks = sorted((ROOT / "localstack" / "ready.d").glob("*.sh"))
    assert [h.name for h in hooks] == ["10-opsmcp-seed.sh", "20-opensearch-logs.sh"]
    for hook in hooks:
        assert hook.stat().st_mode & 0o111, f"{hook.name} is not executable"
        out = subprocess.run(["bash", "-n", str(hook)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    seed = hooks[0].read_text()
    assert 'opsmcp" sandbox seed --endpoint-url "$ENDPOINT"' in seed
    assert 'ENDPOINT="${OPSMCP_SEED_ENDPOINT_URL:-http://localhost:4566}"' in seed
    assert '"$BUILD[opensearch]"' in seed  # hook 20 loads logs with the opensearch extra
    for hook, paths in ((hooks[0], ("/opt/opsmcp-venv", "/opt/opsmcp-src")),
                        (hooks[1], ("/opt/opsmcp-venv", "/opt/opsmcp-seed"))):
        for path in paths:  # container paths only as defaults of variables
            assert all(":-" + path in line for line in hook.read_text().splitlines()
                       if path in line and not line.startswith("#")), (hook.name, path)
    assert "logs load --to opensearch" in hooks[1].read_text()
    template = json.loads((ROOT / "localstack" / "opensearch" / "index-template.json").read_text())
    mapping = template["template"]["mappings"]["properties"]
    assert all(mapping[k]["type"] == "keyword" for k in ("trace_id", "event_id", "order_id"))


def test_promtail_ships_to_the_loki_service_with_the_service_label(compose):
    config = yaml.safe_load((ROOT / "deploy" / "promtail" / "config.yml").read_text())
    assert [c["url"] for c in config["clients"]] == ["http://loki:3100/loki/api/v1/push"]
    labels = {r["target_label"] for job in config["scrape_configs"] for r in job["relabel_configs"]}
    assert Settings().loki_service_label in labels  # the label opsmcp's Loki backend filters services on
    env = compose["services"]["opsmcp"]["environment"]
    assert env["OPSMCP_LOKI_URL"] == "http://loki:3100" == compose["services"]["loki-seed"]["environment"][
        "OPSMCP_LOKI_URL"]
    assert "3100:3100" in compose["services"]["loki"]["ports"]


#: PromQL words that are not metric names (functions are told apart by their "(").
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan"}


def rule_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges and strings removed)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)
    return {n for n in names if n.lower() not in _PROMQL_WORDS and not n[0].isdigit()}


async def test_alert_rules_read_series_opsmcp_exports_and_fire(fresh_moto, tmp_path):
    """Regression: OpsmcpToolErrors read opsmcp_tool_errors_total, which opsmcp never exported
    (its errors are opsmcp_tool_calls_total{outcome="tool_error"}), so it could never fire,
    and this test hard-coded that name as "exported". Now the exported names come from a
    scrape of a server that answered real calls, every rule's metrics must be among them (or
    be Prometheus's own ``up``), and promtool proves each alert fires on the scraped series."""
    from mcp import Client
    from prometheus_client.parser import text_string_to_metric_families

    from helpers import make_settings
    from opsmcp.server import build_server

    server, runtime = build_server(make_settings(fresh_moto, tmp_path, toolsets=["queues"]))
    async with Client(server) as client:
        await client.call_tool("list_queues", {})
        for _ in range(3):
            assert (await client.call_tool("peek_messages", {"queue": "no-such-queue"})).is_error
    scrape = runtime.stats.render().decode()
    samples = [s for fam in text_string_to_metric_families(scrape) for s in fam.samples]
    exported = {s.name for s in samples} | {"up"}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        assert rule_metrics(rule["expr"]) and rule_metrics(rule["expr"]) <= exported, (rule["alert"], rule["expr"])
    assert rule_metrics('sum by (tool) (increase(x_total{outcome=~"a|b"}[5m])) > 5 and on(job) up') == {"x_total",
                                                                                                        "up"}
    if not shutil.which("promtool"):
        pytest.skip("promtool missing: apt-get install -y prometheus")
    errors = [s for s in samples if s.name == "opsmcp_tool_calls_total" and s.labels["outcome"] == "tool_error"]
    assert errors, scrape
    target = 'job="opsmcp", instance="opsmcp:3001"'
    series = [{"series": "opsmcp_tool_calls_total{" + ", ".join(f'{k}="{v}"' for k, v in s.labels.items())
               + f", {target}}}", "values": "0+2x15"} for s in errors]  # 2 more errors a minute
    series.append({"series": f"up{{{target}}}", "values": "1x3 0x12"})  # stops answering after 3 minutes
    tool = errors[0].labels["tool"]
    test = {"rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
                {"eval_time": "10m", "alertname": "OpsmcpToolErrors", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "tool": tool},
                    "exp_annotations": {
                        "summary": f"tool {tool} failed 10 times in 5 minutes",
                        "description": f"Agents calling {tool} get tool errors; check the backend it reads."}}]},
                {"eval_time": "10m", "alertname": "OpsmcpDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": "opsmcp", "instance": "opsmcp:3001"},
                    "exp_annotations": {"summary": "opsmcp at opsmcp:3001 does not answer Prometheus's scrapes"}}]},
            ]}]}
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(test))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "rules_test.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_the_env_file_asks_each_secret_once_and_compose_passes_it_on(compose):
    """Regression: the example asked for the OpenSearch admin password twice
    (OPENSEARCH_INITIAL_ADMIN_PASSWORD and OPSMCP_OPENSEARCH_PASSWORD), which had to match."""
    example = (ROOT / "deploy" / "opsmcp.env.example").read_text()
    asked = re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M)
    assert sorted(asked) == ["OPENSEARCH_INITIAL_ADMIN_PASSWORD", "OPSMCP_HTTP_TOKEN", "OPSMCP_WEBHOOK_TOKEN"], asked
    opsmcp = compose["services"]["opsmcp"]
    assert opsmcp["entrypoint"][:2] == ["/bin/sh", "-c"]
    assert 'OPSMCP_OPENSEARCH_PASSWORD="$$OPENSEARCH_INITIAL_ADMIN_PASSWORD" exec opsmcp "$$@"' in opsmcp["entrypoint"]


def test_healthchecks_ask_what_each_service_needs(compose, tmp_path):
    """Regression: opsmcp's healthcheck asked /healthz (liveness) where /readyz says whether it
    can serve; Dashboards' called /api/status without credentials while the security plugin is
    on (401 forever). Dashboards cannot run here: its healthcheck command runs on this host
    against a loopback server that answers /api/status as the security plugin does (401
    without admin's basic auth) and must pass; without credentials it would fail."""
    import base64
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    opsmcp = compose["services"]["opsmcp"]["healthcheck"]["test"]
    assert "/readyz" in opsmcp[-1] and "/healthz" not in opsmcp[-1]
    password = "Str0ng!pass"
    seen: list[str] = []

    class Status(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            ok = self.path == "/api/status" and auth == "Basic " + base64.b64encode(
                f"admin:{password}".encode()).decode()
            self.send_response(200 if ok else 401)
            self.end_headers()

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Status)) as base:
        kind, command = compose["services"]["opensearch-dashboards"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL" and "localhost:5601" in command
        command = command.replace("$$", "$").replace("localhost:5601", base.removeprefix("http://"))
        env = {"PATH": "/usr/bin:/bin", "OPENSEARCH_INITIAL_ADMIN_PASSWORD": password}
        out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (seen, out.stderr)
        out = subprocess.run(["sh", "-c", command], env={**env, "OPENSEARCH_INITIAL_ADMIN_PASSWORD": "wrong"},
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0  # the check can fail: a 401 is unhealthy
