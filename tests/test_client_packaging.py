"""Where clients find opsmcp (issue 24): the MCP registry's ``server.json``, the Claude
Desktop bundle (MCPB), and the README's ``uvx`` / ``pipx run`` one-liners.

- ``server.json`` is validated against the registry's schema, vendored in
  ``tests/fixtures/mcp-registry/`` (no network), and checked against ``pyproject.toml``
  and the README's ``mcp-name`` marker (how the registry verifies the PyPI package).
- ``packaging/mcpb/`` is validated and packed by ``mcpb`` (npm ``@anthropic-ai/mcpb``,
  installed in ``tests/e2e_npm``); its entry point is run with the manifest's environment
  and serves over stdio. Not run here: Claude Desktop itself installing the bundle (its
  ``uv`` runtime fetches ``opsmcp`` from PyPI, where this version is not yet published).
- The one-liners run the installed console script from a wheel built from this tree, each
  in a fresh environment that ``uvx`` / ``pipx`` make (dependencies from the package index).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import helpers
import jsonschema
import pytest
from helpers import build_wheel
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "fixtures" / "mcp-registry" / "server.schema.json"
MCPB = ROOT / "tests" / "e2e_npm" / "node_modules" / ".bin" / "mcpb"
BUNDLE = ROOT / "packaging" / "mcpb"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BIN = Path(sys.executable).parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """:func:`helpers.clean_env` with the sandbox stopping as soon as its last server leaves."""
    return helpers.clean_env(home, **{"OPSMCP_SANDBOX_IDLE_SECONDS": "0", **extra})


def test_server_json_is_valid_for_the_registry_and_names_this_release() -> None:
    server = json.loads((ROOT / "server.json").read_text())
    schema = json.loads(SCHEMA.read_text())
    assert server["$schema"] == schema["$id"]
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(server)
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == PYPROJECT["name"]
    assert server["version"] == package["version"] == PYPROJECT["version"]
    assert package["runtimeArguments"][0]["value"] == f"opsmcp[sandbox]=={PYPROJECT['version']}"
    assert "sandbox" in PYPROJECT["optional-dependencies"]
    # The registry verifies PyPI ownership by this marker in the package's README (its PyPI description).
    assert f"mcp-name: {server['name']}" in (ROOT / PYPROJECT["readme"]).read_text()
    documented = {v["name"] for v in package["environmentVariables"]}
    assert documented == {"AWS_PROFILE", "AWS_REGION", "OPSMCP_ALLOW_WRITES"}


def test_the_registry_schema_is_the_vendored_one() -> None:
    import hashlib

    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest in (ROOT / "tests" / "fixtures" / "mcp-registry" / "SOURCE.md").read_text()
    bad = json.loads((ROOT / "server.json").read_text()) | {"description": "x" * 101}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA.read_text()))


@pytest.mark.skipif(not MCPB.exists() and not os.environ.get("CI"),
                    reason="mcpb not installed (npm install in tests/e2e_npm; scripts/test does)")
async def test_mcpb_bundle_validates_packs_and_its_entry_point_serves(tmp_path: Path) -> None:
    run = subprocess.run([str(MCPB), "validate", str(BUNDLE / "manifest.json")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "validation passes" in run.stdout, run.stdout + run.stderr
    out = tmp_path / "opsmcp.mcpb"
    run = subprocess.run([str(MCPB), "pack", str(BUNDLE), str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    with zipfile.ZipFile(out) as bundle:
        assert sorted(bundle.namelist()) == [".mcpbignore", "manifest.json", "pyproject.toml", "server.py"] or \
            sorted(bundle.namelist()) == ["manifest.json", "pyproject.toml", "server.py"]
        manifest = json.loads(bundle.read("manifest.json"))
        env_project = tomllib.loads(bundle.read("pyproject.toml").decode())["project"]
        bundle.extractall(tmp_path / "unpacked")
    assert manifest["version"] == PYPROJECT["version"]
    assert env_project["dependencies"] == [f"opsmcp[sandbox]=={PYPROJECT['version']}"]
    assert set(manifest["user_config"]) == {"aws_profile", "aws_region", "allow_writes"}

    # The host runs the entry point with the manifest's env, user_config filled in (defaults here:
    # no profile, so the embedded sandbox; writes switched on to see the switch work).
    values = {k: str(v["default"]).lower() if isinstance(v["default"], bool) else str(v["default"])
              for k, v in manifest["user_config"].items()} | {"allow_writes": "true"}
    env = clean_env(tmp_path)
    for name, value in manifest["server"]["mcp_config"]["env"].items():
        key = value.removeprefix("${user_config.").removesuffix("}")
        env[name] = values[key]
    args = manifest["server"]["mcp_config"]["args"]
    entry = args[args.index(manifest["server"]["entry_point"]):]
    params = StdioServerParameters(command=sys.executable, args=entry, env=env, cwd=str(tmp_path / "unpacked"))
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"list_queues", "analyze_dlq", "redrive_dlq"} <= tools  # allow_writes reached the server
        listed = await client.call_tool("list_queues", {})
        assert not listed.is_error and len(listed.structured_content["queues"]) == 7  # the sandbox: no profile


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("oneliner"))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tool", ["uvx", "pipx"])
async def test_the_readme_one_liners_run_from_a_built_wheel(wheel: Path, tmp_path: Path, tool: str) -> None:
    """`uvx --from 'opsmcp[sandbox]' opsmcp serve` and `pipx run --spec ... opsmcp serve`
    (README), with the wheel in place of the PyPI name: a fresh environment, the console
    script, the sandbox extra, an MCP client over stdio."""
    exe = shutil.which(tool, path=str(BIN)) or shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed (the test extra installs it)")
    spec = f"opsmcp[sandbox] @ {wheel.as_uri()}"
    env = clean_env(tmp_path, UV_CACHE_DIR=str(Path.home() / ".cache" / "uv"),
                    PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "pipx" / "bin"))
    argv = [exe, "--from", spec, "opsmcp"] if tool == "uvx" else [exe, "run", "--spec", spec, "opsmcp"]
    version = subprocess.run([*argv, "--version"], env=env, capture_output=True, text=True, timeout=600,
                             stdin=subprocess.DEVNULL)
    assert version.returncode == 0, version.stderr[-3000:]
    assert version.stdout.strip() == f"opsmcp {PYPROJECT['version']}"
    params = StdioServerParameters(command=argv[0], args=[*argv[1:], "serve"], env=env)
    async with Client(params) as client:
        listed = await client.call_tool("list_queues", {})
        assert not listed.is_error and len(listed.structured_content["queues"]) == 7
