"""deploy/k8s: the manifests validate against the Kubernetes schemas (kubernetes-validate,
strict), and say what the design promises: two replicas, liveness on /healthz and readiness
on /readyz, non-root with a read-only root filesystem, and only real opsmcp settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_validates_strictly(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_deployment_shape() -> None:
    kinds = {d["kind"]: d for d in _docs()}
    assert {"Deployment", "Service", "Secret"} <= set(kinds)
    deployment = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert kinds["Service"]["spec"]["selector"] == spec["selector"]["matchLabels"]
    # Every secret the pod reads exists in the Secret manifest.
    secret_keys = set(kinds["Secret"]["stringData"])
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == kinds["Secret"]["metadata"]["name"] and ref["key"] in secret_keys
    for volume in pod["volumes"]:
        for item in volume.get("secret", {}).get("items", []):
            assert item["key"] in secret_keys


def test_every_opsmcp_variable_is_a_real_setting() -> None:
    from opsmcp.config import Settings

    known = set()
    for name, field in Settings.model_fields.items():
        known.add(f"OPSMCP_{name.upper()}")
        alias = field.validation_alias
        for choice in getattr(alias, "choices", []) or []:
            if isinstance(choice, str):
                known.add(choice.upper())
    container = next(d for d in _docs() if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    used = {e["name"] for e in container["env"] if e["name"].startswith("OPSMCP_")}
    assert used and used <= known, f"not opsmcp settings: {sorted(used - known)}"


def test_probes_pass_the_host_policy_and_the_secret_parses(tmp_path) -> None:
    """The probes send a Host the Deployment allows (the Host/Origin policy applies to
    probes too), and the Secret's tokens file is one opsmcp reads."""
    from opsmcp.transport.auth import load_token_entries

    kinds = {d["kind"]: d for d in _docs()}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    allowed = next(e["value"] for e in container["env"] if e["name"] == "OPSMCP_ALLOWED_HOSTS").split(",")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        headers = {h["name"]: h["value"] for h in container[probe]["httpGet"].get("httpHeaders", [])}
        assert headers.get("Host") in allowed, probe
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(kinds["Secret"]["stringData"]["tokens.jsonl"])
    assert [e.subject for e in load_token_entries(tokens)] == ["replace-me"]
