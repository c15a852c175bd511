"""A built wheel, installed into a fresh venv, carries the playbook catalog, its playbooks
and runbooks as package data, and serves them (issue 8, point 6).

The wheel is built from a copy of the source tree (never in place: a stale ``build/`` could
hide a missing file). The fresh venv gets only the wheel; its dependencies come from this
test environment's site-packages through a plain path entry (so this environment's
editable opsmcp is not visible there), which keeps the test at a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from helpers import build_wheel

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed; returns its directory."""
    where = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(where)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", ask], text=True).strip())
    # Dependencies from this environment, appended after the venv's own site-packages.
    (purelib / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(HOME=str(tmp_path), OPSMCP_DATA_DIR=str(tmp_path / "data"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def test_wheel_ships_the_catalog(wheel_venv: Path, tmp_path: Path) -> None:
    """importlib.resources finds the catalog inside the installed wheel, every playbook and
    runbook is there, and OPSMCP_PLAYBOOK_CATALOG still overrides it."""
    script = """
import json, opsmcp
from opsmcp.backends.ansible import load_catalog
from opsmcp.catalog import packaged_runbooks
from opsmcp.config import Settings
path = Settings().playbook_catalog
cat = load_catalog(path)
print(json.dumps({"module": opsmcp.__file__, "catalog": str(path), "names": cat.names,
                  "files": [str(e.file) for e in cat.playbooks],
                  "runbooks": sorted(p.name for p in packaged_runbooks().glob("*.md"))}))
"""
    run = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    site = str(wheel_venv)
    assert got["module"].startswith(site), got  # the wheel's opsmcp, not the source tree
    assert got["catalog"].startswith(site) and got["catalog"].endswith("opsmcp/tools/catalog.yml")
    assert got["names"] == ["collect_diagnostics", "cleanup_old_files", "rotate_log", "restart_worker"]
    assert all(f.startswith(site) for f in got["files"])
    assert {"collect_diagnostics.md", "restart_worker.md", "order-db-timeout.md"} <= set(got["runbooks"])

    custom = tmp_path / "custom.yml"
    shutil.copy(ROOT / "tools" / "playbooks" / "rotate_log.yml", tmp_path / "rotate.yml")
    custom.write_text("playbooks:\n  - {name: only_this, file: rotate.yml, description: d, risk: change,"
                      " vars: {log_file: {type: path, required: true}}}\n")
    run = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", script], cwd=tmp_path,
                         env=_env(tmp_path, OPSMCP_PLAYBOOK_CATALOG=str(custom)),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["names"] == ["only_this"]

    team = tmp_path / "team"  # a team's own catalog directory: its catalog and its runbooks first
    (team / "runbooks").mkdir(parents=True)
    shutil.copy(tmp_path / "rotate.yml", team / "rotate.yml")
    shutil.copy(custom, team / "catalog.yml")
    (team / "runbooks" / "rotate_log.md").write_text("# Our own rotate_log runbook\n")
    run = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", script + _RUNBOOK], cwd=tmp_path,
                         env=_env(tmp_path, OPSMCP_CATALOG_DIR=str(team)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = run.stdout.splitlines()
    assert json.loads(first)["catalog"] == str(team / "catalog.yml") and json.loads(first)["names"] == ["only_this"]
    assert second == str(team / "runbooks" / "rotate_log.md")


#: Appended to the script above: which file serves opsmcp://runbooks/rotate_log.
_RUNBOOK = """
from opsmcp.surface.resources import runbook_files
print(runbook_files(path)["rotate_log"])
"""


def test_the_package_list_names_every_package_of_the_source_tree() -> None:
    """pyproject lists the packages (find cannot add the mapped opsmcp.tools): a new folder
    under src/opsmcp that is not listed would be missing from the wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = ROOT / "src"
    found = {".".join(d.relative_to(src).parts) for d in (src / "opsmcp").rglob("*")
             if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))} | {"opsmcp"}
    assert set(config["packages"]) == found | {"opsmcp.tools"}
    assert config["package-dir"]["opsmcp.tools"] == "tools" and (ROOT / "tools" / "catalog.yml").is_file()


def test_wheel_ships_the_console_and_its_chart_library(wheel_venv: Path, tmp_path: Path) -> None:
    """The console's page, script and the vendored uPlot (with its licence) are in the
    installed wheel, byte for byte, where the console routes read them."""
    script = """
import json
from opsmcp.transport.console import STATIC_FILES, _static
print(json.dumps({name: len(_static(name)) for name in [*STATIC_FILES, "index.html", "vendor/uPlot.LICENSE"]}))
"""
    run = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    static = ROOT / "src" / "opsmcp" / "static"
    assert json.loads(run.stdout) == {name: (static / name).stat().st_size for name in (
        "app.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "index.html", "vendor/uPlot.LICENSE")}


async def test_installed_server_lists_playbooks_over_stdio(wheel_venv: Path, tmp_path: Path) -> None:
    """`opsmcp serve --allow-writes` from the installed wheel lists and describes the
    shipped playbooks to an MCP client, and serves the catalog and a runbook as resources."""
    env = _env(tmp_path, AWS_ENDPOINT_URL="http://127.0.0.1:9")  # playbooks need no AWS: no sandbox
    params = StdioServerParameters(command=str(wheel_venv / "bin" / "opsmcp"),
                                   args=["serve", "--allow-writes", "--toolsets", "playbooks"], env=env,
                                   cwd=str(tmp_path))
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"list_playbooks", "run_playbook"} <= tools
        listed = await client.call_tool("list_playbooks", {})
        assert not listed.is_error, listed.content
        names = [p["name"] for p in listed.structured_content["playbooks"]]
        assert names == ["collect_diagnostics", "cleanup_old_files", "rotate_log", "restart_worker"]
        catalog = await client.read_resource("opsmcp://playbooks/catalog")
        packaged = (ROOT / "tools" / "catalog.yml").read_text()
        assert catalog.contents[0].text == packaged
        runbook = await client.read_resource("opsmcp://runbooks/rotate_log")
        assert runbook.contents[0].text.startswith("# ")
