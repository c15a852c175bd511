"""The ``opsmcp`` command: serve, sandbox seed, logs load, audit tail, doctor, token add,
approvals.

Everything human-facing goes to stderr; stdout carries only the MCP stdio wire (serve)
or the command's own output (audit tail).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsmcp.config import ALL_TOOLSETS

if TYPE_CHECKING:
    from opsmcp.calls.runtime import Runtime
    from opsmcp.config import Settings
    from opsmcp.sandbox.shared import SharedSandbox

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: The tokens file `opsmcp token add` writes, and `opsmcp serve` reads, in the data directory
#: when OPSMCP_TOKENS_FILE is unset.
TOKENS_FILE = "tokens.jsonl"


def _eprint(text: str) -> None:
    """Print to stderr (stdout is the stdio MCP wire); the same as ``opsmcp.sandbox.eprint``,
    without importing the sandbox."""
    print(text, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    """Settings from env/TOML with the command-line flags on top."""
    from opsmcp.config import Settings

    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    for flag in ("allow_writes", "sandbox"):
        if getattr(args, flag, False):
            overrides[flag] = True
    if getattr(args, "toolsets", None):
        overrides["toolsets"] = args.toolsets
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "sandbox_port", None):
        overrides["sandbox_port"] = args.sandbox_port
    settings = Settings(**overrides)
    if settings.tokens_file is None and (settings.data_dir / TOKENS_FILE).exists():  # `opsmcp token add` made it
        settings = settings.model_copy(update={"tokens_file": settings.data_dir / TOKENS_FILE})
    from opsmcp.backends.aws import use_local_test_credentials

    note = use_local_test_credentials(settings)
    if note:
        _eprint(f"opsmcp: {note}")
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the MCP server over stdio or HTTP, on the data directory's shared sandbox when no
    AWS is configured.

    The HTTP port is bound before anything else starts, so a busy port costs one line and
    no sandbox. Exits 0 when the client leaves or on Ctrl-C, 1 on a failure the user can fix
    (a busy port, a sandbox that cannot start), 2 on invalid configuration.
    """
    from opsmcp.config import aws_configured

    from opsmcp import tracing
    from opsmcp.logsetup import configure

    settings = _settings(args)
    configure(settings.log_level, settings.log_format)  # every logger, uvicorn's included
    tracing.start()  # only with OTEL_EXPORTER_OTLP_ENDPOINT set and the otel extra installed
    if args.transport == "http" and args.host not in LOOPBACK and not (
            settings.http_token or settings.tokens_file or settings.jwks_url):
        print(f"opsmcp: refusing to serve HTTP on {args.host} without a token: anyone who can reach it could call "
              "every tool. Set OPSMCP_HTTP_TOKEN (clients send 'Authorization: Bearer <token>'), or bind 127.0.0.1.",
              file=sys.stderr)
        return 2
    if args.transport == "http":
        from opsmcp.config import weak_token_problem

        weak = weak_token_problem(settings, args.host)
        if weak:
            print(f"opsmcp: refusing to serve: {weak}", file=sys.stderr)
            return 2
    listener = _bind(args.host, args.port) if args.transport == "http" else None
    sandbox: SharedSandbox | None = None
    stopping = threading.Event()  # set when the server exits: seeding errors after it are not reported
    built = threading.Event()  # set once `runtime` exists (seeding starts before the server is built)
    holder: dict[str, Runtime] = {}
    boot_thread: threading.Thread | None = None
    if settings.sandbox or not aws_configured(settings):
        # Resolve the endpoint (and the sandbox's log store) first, then build the clients:
        # nothing is re-pointed after the server exists. The data directory's sandbox is
        # joined, or started in its own process (moto, seeded there, and the log store in
        # another) before the MCP SDK is imported here: on 2 cores the server is built while
        # the sandbox starts. tools/list answers at once; tool calls wait
        # (runtime.wait_ready) until seeding is done. Imported only here: a configured
        # endpoint's cold start never loads the sandbox.
        from opsmcp.sandbox import banner
        from opsmcp.sandbox.shared import join

        joining = join(settings)
        import opsmcp.server  # noqa: F401 - the SDK's import, while the sandbox imports moto

        sandbox = joining.attach()
        settings = sandbox.settings
        seeding = sandbox

        def boot() -> None:
            error = None
            try:
                built.wait()
                if not seeding.seeded_at_join:  # while the sandbox seeds: off the first call's path
                    _prewarm(holder["runtime"], stopping)  # (a seeded one: each call makes only its own client)
                seeding.wait_seeded()
                _eprint(banner(seeding))
            except Exception as exc:
                if stopping.is_set():  # the server is exiting (client gone, Ctrl-C): not an error
                    logging.getLogger("opsmcp").debug("sandbox seeding stopped by shutdown", exc_info=True)
                    return
                logging.getLogger("opsmcp").error("sandbox start-up failed: %s: %s", type(exc).__name__, exc)
                error = f"the embedded sandbox failed to start: {type(exc).__name__}: {exc}"
            built.wait()
            runtime = holder["runtime"]
            runtime.startup_error = error
            runtime.ready.set()

        boot_thread = threading.Thread(target=boot, name="opsmcp-sandbox", daemon=True)
        boot_thread.start()
    from opsmcp.server import build_server

    server, runtime = build_server(settings)
    from opsmcp.calls.heap import started

    started()  # the garbage collector back on, start-up's objects frozen (main paused it)
    if sandbox is None:  # say at once what every call would fail with; after the server is built: with a
        # profile this imports boto3, whose ~0.5 s under the GIL would otherwise slow the build
        threading.Thread(target=_report_credentials, args=(settings,), name="opsmcp-credentials", daemon=True).start()
    if sandbox is not None:
        runtime.ready.clear()
        holder["runtime"] = runtime
        built.set()
    for toolset, why in runtime.disabled.items():
        _eprint(f"opsmcp: the {toolset} toolset is DISABLED: {why}")
    on_sandbox = ""
    if sandbox is not None:
        on_sandbox = ("; seeding the embedded sandbox (no AWS endpoint or credentials configured)" if
                      sandbox.started_here else "; on the embedded sandbox another `opsmcp serve` on this data dir "
                      "started")
    _eprint(f"opsmcp {args.transport}: {len(runtime.tools)} tools ({', '.join(sorted(runtime.tools))}); "
            f"writes {'ENABLED' if settings.allow_writes else 'disabled'}{on_sandbox}")
    interrupted = False
    last = False
    try:
        if args.transport == "stdio":
            import anyio

            _stop_stdio_on_sigint(stopping, sandbox)
            anyio.run(server.run_stdio_async)
        else:
            import uvicorn

            from opsmcp.transport.app import build_app

            base = f"http://{f'[{args.host}]' if ':' in args.host else args.host}:{args.port}"
            _eprint(f"opsmcp http: streamable HTTP at {base}/mcp, SSE at {base}/sse, events at {base}/events, "
                    f"the console at {base}/ (Ctrl-C to stop)"
                    + (f"; bearer tokens from {settings.tokens_file}" if settings.tokens_file else ""))
            app = build_app(server, runtime, host=args.host, port=args.port)
            # log_config=None: uvicorn's loggers keep the handler configure() set up, at OPSMCP_LOG_LEVEL
            config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, lifespan="on",
                                    log_level=settings.log_level.lower(), timeout_graceful_shutdown=1)
            # on the socket bound above; re-raises a caught SIGINT as KeyboardInterrupt after shutdown
            uvicorn.Server(config).run(sockets=[listener] if listener is not None else None)
            interrupted = True  # returned: uvicorn stopped on a signal it caught (SIGINT while SIGINT is ignored)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stopping.set()
        tracing.flush()  # the process ends with os._exit: export the buffered spans first
        if boot_thread is not None:
            boot_thread.join(timeout=0.5)  # let seeding notice; never hold up the exit for long
        if sandbox is not None:
            last = sandbox.leave()
    if interrupted:
        _eprint("opsmcp: stopped (Ctrl-C)" + (_lingers(settings) if last else ""))
    return 0


def _lingers(settings: Settings) -> str:
    """What happens to the shared sandbox after its last server left (said at Ctrl-C)."""
    idle = settings.sandbox_idle_seconds
    if not idle:
        return ""
    return (f"; the sandbox stays up {idle:g} s for the next `opsmcp serve` on {settings.data_dir} "
            "(`opsmcp sandbox stop` stops it now)")


def _bind(host: str, port: int) -> Any:
    """Bind and listen on ``host``:``port`` before anything else starts; return the socket
    (uvicorn serves on it).

    Raises:
        OpsError: the port is in use, needs privileges, or the host is not an address of
            this machine (one sentence naming ``--port`` / ``--host``).
    """
    import errno
    import socket

    from opsmcp.errors import OpsError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OpsError(f"cannot serve on --host {host}: {exc.strerror}.",
                       "pass an address of this machine, e.g. --host 127.0.0.1.") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OpsError(f"port {port} on {host} is already in use (another `opsmcp serve`?).",
                           "stop that server, or serve on another port with --port N.") from exc
        if exc.errno == errno.EACCES:
            raise OpsError(f"port {port} needs privileges this user does not have.",
                           "use a port above 1023, e.g. --port 3001.") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise OpsError(f"{host} is not an address of this machine.",
                           "pass --host 127.0.0.1 (or 0.0.0.0 with OPSMCP_HTTP_TOKEN set).") from exc
        raise
    return sock


def _report_credentials(settings: Settings) -> None:
    """Print, on stderr, what is wrong with the AWS credentials (one sentence with the fix)."""
    from opsmcp.backends.aws import credentials_problem

    problem = credentials_problem(settings)
    if problem:
        _eprint(f"opsmcp: {problem} Until then every AWS tool call answers with this, and /readyz with 503.")


def _stop_stdio_on_sigint(stopping: threading.Event, sandbox: SharedSandbox | None) -> None:
    """Make Ctrl-C (SIGINT) stop a stdio server at once, whatever it is doing.

    The SDK's stdio transport reads stdin in a worker thread that no cancellation can
    interrupt, so asyncio's own SIGINT handling (cancel the main task, then wait for it)
    waits for the client's next line: forever on an idle session. This handler leaves the
    shared sandbox (it outlives this server by its idle time), says so on stderr and ends
    the process. Nothing is lost: every audit record is
    fsynced as it is written, and a write that was in flight keeps an intent without an
    outcome, which the next start marks ``interrupted``. Only from the main thread (where
    signal handlers live); elsewhere asyncio's handling stays.
    """
    import contextlib
    import os
    import signal

    from opsmcp import tracing

    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(signum: int, frame: object) -> None:
        stopping.set()
        last = False
        try:
            tracing.flush(1.0)
            if sandbox is not None:
                last = sandbox.leave()
        finally:
            _eprint("opsmcp: stopped (Ctrl-C)" + (_lingers(sandbox.settings) if sandbox is not None and last else ""))
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(0)

    signal.signal(signal.SIGINT, on_sigint)


def _prewarm(runtime: Runtime, stopping: threading.Event) -> None:
    """Create the boto3 clients the first tool calls use (importing boto3 and loading the
    service models takes a few hundred ms), so the first call after the sandbox is seeded
    does not pay for them. Best effort: a failure here shows up, with its message, in the
    call that needs the client."""
    for service in ("sqs", "dynamodb", "cloudwatch"):
        if stopping.is_set():
            return
        try:
            runtime.clients.client(service)
        except Exception:
            logging.getLogger("opsmcp").debug("could not create the %s client ahead of time", service, exc_info=True)
            return


def cmd_sandbox_seed(args: argparse.Namespace) -> int:
    """Seed the incident scenario into an AWS-compatible endpoint and the configured log store.

    Each part (queues, messages, orders, metrics, logs) is looked at first and only what is
    missing is written, so a seed that failed half-way is finished by the next run and a
    complete one is left alone; one line says per part what was found and written.
    ``--reset`` replaces the queues' messages, the orders and the log lines (metric points
    cannot be deleted: series already there are kept). Without AWS credentials the
    sandbox's dummy ones are used: the endpoint is explicit.
    """
    import os

    from opsmcp.sandbox import SANDBOX_CREDENTIALS, eprint
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import PartResult, remove_seeded, resume_seed, seed_clients, seed_logs

    settings = _settings(args, aws_endpoint_url=args.endpoint_url, aws_region=args.region)
    if not (settings.aws_profile or os.environ.get("AWS_ACCESS_KEY_ID")):
        os.environ.update(SANDBOX_CREDENTIALS)  # LocalStack and moto accept any; never real ones
    scenario = build_scenario()
    clients = seed_clients(settings)
    if args.reset:
        remove_seeded(settings, scenario, clients)
    results = resume_seed(settings, scenario, clients, purged=args.reset)
    store = settings.log_store_path
    if "logs" in settings.toolsets:
        results.append(seed_logs(store, scenario, reset=args.reset))
    else:
        results.append(PartResult("logs", 0, skipped="the logs toolset is off"))
    done = all(r.status in ("present", "skipped") for r in results)
    eprint((f"opsmcp: {args.endpoint_url} already holds the scenario; nothing seeded: "
            if done else f"seeded {args.endpoint_url}: ")
           + "; ".join(r.describe() for r in results)
           + (f"; log lines in {store}" if "logs" in settings.toolsets else "")
           + (". Use --reset to replace it." if done else ""))
    return 0


def cmd_sandbox_stop(args: argparse.Namespace) -> int:
    """Stop the data directory's shared sandbox now (servers still using it lose it)."""
    from opsmcp.sandbox.shared import stop

    _eprint(f"opsmcp: {stop(_settings(args).data_dir)}")
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    """Print the last N audit records (oldest first), as text or JSON Lines."""
    import json

    import anyio

    from opsmcp.backends.aws import AwsClients
    from opsmcp.calls.audit import format_records
    from opsmcp.server import build_audit

    settings = _settings(args)
    records = anyio.run(build_audit(settings, AwsClients(settings)).tail, args.n)
    if args.json:
        print("\n".join(json.dumps(r, default=str) for r in records))
    elif records:
        print(format_records(records))
    else:
        print(f"(no audit records in {settings.audit_table or settings.audit_log_path})", file=sys.stderr)
    return 0


def cmd_logs_load(args: argparse.Namespace) -> int:
    """Load JSON Lines log files (or stdin) into the embedded log store, OpenSearch, CloudWatch
    Logs or Loki (--to)."""
    from opsmcp.backends.logstore import LogStore

    settings = _settings(args)
    target = args.to or settings.log_backend
    if target in ("cloudwatch", "loki"):
        if target == "cloudwatch":
            from opsmcp.backends.cloudwatch_logs.load import load_with_settings as load_cloudwatch

            report = load_cloudwatch(settings, args.files, group=args.group, show_progress=not args.quiet)
        else:
            from opsmcp.backends.loki.load import load_with_settings as load_loki

            report = load_loki(settings, args.files, show_progress=not args.quiet)
        print(report.summary(), file=sys.stderr)
        return 0 if report.loaded or report.skipped or not report.bad else 1
    if target == "opensearch":
        from opsmcp.backends.opensearch.load import load_with_settings

        report = load_with_settings(settings, args.files, index=args.index, show_progress=not args.quiet)
        print(report.summary(), file=sys.stderr)
        return 0 if report.loaded or not report.bad else 1
    path = Path(args.store) if args.store else _log_store_of_server(settings)
    report = LogStore(path).load_files(args.files, show_progress=not args.quiet)
    print(report.summary(), file=sys.stderr)
    return 0 if report.loaded or not report.bad else 1


def _log_store_of_server(settings: Settings) -> Path:
    """The log store `opsmcp serve` with these settings reads: the sandbox's when the sandbox
    is the active backend (and no OPSMCP_LOG_STORE is set), else ``settings.log_store_path``."""
    from opsmcp.config import aws_configured
    from opsmcp.sandbox import sandbox_log_store

    if settings.log_store is None and (settings.sandbox or not aws_configured(settings)):
        path = sandbox_log_store(settings.data_dir)
        print(f"opsmcp: no AWS configured, so the sandbox is the active backend: loading into its log store {path} "
              "(a running sandbox sees these lines; its next start replaces them)", file=sys.stderr)
        return path
    return settings.log_store_path


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check configuration and every backend; print one line per check (OK, WARN or FAIL);
    exit 1 when a check fails (warnings do not)."""
    import os

    import anyio

    from opsmcp.backends.aws import aws_call
    from opsmcp.config import aws_configured
    from opsmcp.errors import OpsError
    from opsmcp.sandbox import MISSING_EXTRA, moto_installed, sandbox_log_store
    from opsmcp.server import build_server

    settings = _settings(args)
    on_sandbox = settings.sandbox or not aws_configured(settings)
    if on_sandbox:  # check what `opsmcp serve` would use, without starting moto
        settings = settings.model_copy(update={"log_store": settings.log_store or sandbox_log_store(settings.data_dir)})
    _, runtime = build_server(settings)
    results: list[tuple[str, str, str]] = []  # (status OK/WARN/FAIL, label, detail)

    async def probe(label: str, what: str, fn: Any, **kwargs: Any) -> None:
        try:
            resp = await aws_call(runtime.clients, what, fn, **kwargs)
            results.append(("OK", label, _describe(resp)))
        except OpsError as exc:
            results.append(("FAIL", label, str(exc)))

    async def checks() -> None:
        clients = runtime.clients  # each client made inside the probe: an unusable profile is a FAIL line
        if "queues" in runtime.enabled:
            await probe("sqs", "list queues", lambda: clients.client("sqs").list_queues(MaxResults=1000))
        if "orders" in runtime.enabled:
            await probe("orders table", f"describe table {settings.orders_table}",
                        lambda: clients.client("dynamodb").describe_table(TableName=settings.orders_table))

    if not on_sandbox:
        from opsmcp.backends.aws import credentials_problem

        problem = credentials_problem(settings)
        results.append(("FAIL", "credentials", problem) if problem else
                       ("OK", "credentials", f"found for {settings.aws_endpoint_url or 'AWS'}"
                                             + (f" (profile {settings.aws_profile})" if settings.aws_profile else "")))
        anyio.run(checks)
    elif moto_installed():
        from opsmcp.sandbox.shared import running

        reason = "--sandbox" if settings.sandbox else "no AWS endpoint or credentials configured"
        state = running(settings.data_dir)
        results.append(("OK", "backend", f"the embedded sandbox ({reason}): " + (
            f"running at {state.get('endpoint')} (pid {state['pid']}), shared by every `opsmcp serve` on "
            f"{settings.data_dir}" if state else "`opsmcp serve` starts and seeds it")))
    else:
        results.append(("FAIL", "backend", MISSING_EXTRA))
    from opsmcp.backends.prometheus import check_reachability

    for label, ok, detail in check_reachability(settings):  # Prometheus, Alertmanager, alert webhook (if set)
        results.append(("OK" if ok else "FAIL", label, detail))
    for name in runtime.enabled:
        why = runtime.disabled.get(name)
        results.append(("WARN" if why else "OK", f"toolset {name}", f"disabled: {why}" if why else "loaded"))
    if "logs" in runtime.enabled:
        if settings.log_backend != "embedded":
            from opsmcp.backends.log_factory import log_backend_checks

            for c in log_backend_checks(settings):
                results.append(("FAIL" if not c.ok else "WARN" if c.warning else "OK", c.label, c.detail))
        else:
            store = settings.log_store_path
            if store.exists():
                results.append(("OK", "log store", str(store)))
            elif on_sandbox:
                results.append(("OK", "log store", f"{store} (the sandbox creates it at start)"))
            else:
                results.append(("WARN", "log store", f"{store} does not exist yet: `opsmcp logs load FILE` creates it"))
    if settings.audit_table:
        results.append(("OK", "audit", f"DynamoDB table {settings.audit_table} (checked on first write)"))
    else:
        path = settings.audit_log_path
        parent = next((p for p in [path.parent, *path.parents] if p.exists()), path.parent)
        writable = os.access(path if path.exists() else parent, os.W_OK)
        results.append(("OK" if writable else "FAIL", "audit", str(path) if writable else f"{path} is not writable"))
    from opsmcp.private import loose_modes

    loose = loose_modes(settings)  # data files other users may read: warned, never changed here
    results += [("WARN", "file modes", line) for line in loose] or [
        ("OK", "file modes", f"{settings.data_dir} and its files are private to their owner")]
    for status, label, detail in results:
        print(f"{status:<4} {label}: {detail}")
    return 1 if any(status == "FAIL" for status, _, _ in results) else 0


def cmd_token_add(args: argparse.Namespace) -> int:
    """Create a token for SUBJECT with --scopes, append its SHA-256 to the tokens file and print
    the token (once: only its hash is kept)."""
    from opsmcp.transport.auth import add_token

    settings = _settings(args)
    path = Path(args.file) if args.file else settings.tokens_file or settings.data_dir / TOKENS_FILE
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    token = add_token(path, args.subject, scopes)
    reads = ("`opsmcp serve` on this data dir reads it" if path == settings.data_dir / TOKENS_FILE
             else "set OPSMCP_TOKENS_FILE to it for `opsmcp serve`" if path != settings.tokens_file
             else "`opsmcp serve` reads it (OPSMCP_TOKENS_FILE)")
    print(f"added {args.subject} ({', '.join(sorted(set(scopes)))}) to {path} ({reads}); the token is shown only "
          "now:", file=sys.stderr)
    print(token)
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    """``opsmcp approvals list|show|approve|deny``: the approvals HTTP API of a running server
    (``--url``, default ``OPSMCP_URL``), as the identity of ``--token`` (default ``OPSMCP_TOKEN``).

    Prints one line per request (``--json``: the API's JSON). Exit 0 on success, 1 when the
    server refuses (not found, not pending, not allowed: its reason on stderr) or cannot be
    reached."""
    import json
    import os

    import httpx

    url = (args.url or os.environ.get("OPSMCP_URL") or "http://127.0.0.1:3001").rstrip("/")
    token = args.token or os.environ.get("OPSMCP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    what = args.approvals_command
    params: dict[str, str] | None = None
    if what == "list":
        method, path, body = "GET", "/api/approvals", None
        params = {"status": "all" if args.all else "pending", "limit": str(args.limit)}
    else:
        from urllib.parse import quote

        ident = quote(args.id, safe="")  # an id is never a path
        method, path = ("GET", f"/api/approvals/{ident}") if what == "show" else (
            "POST", f"/api/approvals/{ident}/{what}")
        body = {"reason": args.reason} if what == "deny" else ({} if what == "approve" else None)
    try:
        # approve waits for the write to run; the server bounds it (playbook timeout, redrive size)
        with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=900)) as http:
            resp = http.request(method, path, params=params, json=body)
    except httpx.HTTPError as exc:
        print(f"opsmcp: cannot reach {url}: {exc} (set --url or OPSMCP_URL)", file=sys.stderr)
        return 1
    try:
        data = resp.json()
    except ValueError:
        data = {"error": resp.text[:500]}
    if resp.status_code >= 400:
        print(f"opsmcp: {resp.status_code}: {data.get('error') or data.get('error_description') or data}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for item in data.get("approvals", [data]):
        print(_approval_line(item, full=what != "list"))
    return 0


def _approval_line(item: dict[str, Any], full: bool) -> str:
    """A request (the API's JSON) as text: one line, plus the preview and result when ``full``."""
    bound = item.get("bound") or {}
    held = f" {bound.get('argument')}<={bound.get('value')}" if bound else ""
    who = f" by {item.get('approver')}" if item.get("approver") else ""
    preview = str(item.get("preview") or "")
    line = (f"{item.get('id')} {item.get('status')}{who} {item.get('tool')}{held} requested by "
            f"{item.get('requester')} at {item.get('created_at')}, expires {item.get('expires_at')}: "
            f"{preview.splitlines()[0] if preview else ''}")
    if not full:
        return line
    extra = [line, preview, f"console: {item.get('console_url')}"]
    if item.get("reason"):
        extra.append(f"reason: {item['reason']}")
    if item.get("result") is not None:
        counts = {k: v for k, v in item["result"].items() if isinstance(v, (int, str)) and k != "next_cursor"}
        extra.append("result: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if item.get("error"):
        extra.append(f"error: {item['error']}")
    return "\n".join(extra)


def _describe(resp: dict[str, Any]) -> str:
    """One line about a probe answer (ListQueues / DescribeTable)."""
    if "Table" in resp:
        t = resp["Table"]
        indexes = ", ".join(i["IndexName"] for i in t.get("GlobalSecondaryIndexes", [])) or "none"
        return f"{t['TableName']} {t['TableStatus']}, {t.get('ItemCount', '?')} items, indexes: {indexes}"
    return f"{len(resp.get('QueueUrls', []))} queues visible"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opsmcp`` console script; returns the exit code.

    Anticipated failures (bad configuration, an unreachable or unconfigured backend, a
    missing file, a missing extra) print one line on stderr and exit 1 or 2; nothing
    prints a traceback unless ``OPSMCP_LOG_LEVEL=DEBUG``.
    """
    import os

    from opsmcp.logsetup import configure

    args = build_parser().parse_args(argv)
    if argv is None and args.command == "serve":  # the console script's server process (see below)
        from opsmcp.calls.heap import pause_for_start_up

        pause_for_start_up()  # until cmd_serve has built the server: heap.started()
    # From the environment until the settings are read (serve configures again from them).
    configure(os.environ.get("OPSMCP_LOG_LEVEL", "WARNING"), os.environ.get("OPSMCP_LOG_FORMAT", "text"))
    code = _run(args)
    if argv is None and args.command == "serve":
        # The console script: everything that must survive is already on disk (audit records
        # are fsynced as written; the sandbox is disposable). Skip interpreter teardown, which
        # takes seconds after a server run (freeing moto, botocore and pydantic state), so
        # Ctrl-C stops the server within a second.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; map what it raises to one line and an exit code."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside the serve loop (start-up) or in another command
        print("opsmcp: stopped (Ctrl-C)", file=sys.stderr)
        return 0 if args.command == "serve" else 130
    except Exception as exc:  # a CLI user gets one line, not a traceback
        line, code = _one_line(exc, args)
        import os

        if os.environ.get("OPSMCP_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"opsmcp: {line}", file=sys.stderr)
        return code


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number: use 1-65535, e.g. 3001")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The ``opsmcp`` argument parser: every command and option, each with its help text."""
    from opsmcp import __version__

    parser = argparse.ArgumentParser(prog="opsmcp", description="MCP server for safe production operations.")
    parser.add_argument("--version", action="version", version=f"opsmcp {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server (the embedded sandbox when no AWS is configured)",
                           description="Run the MCP server. With no AWS endpoint or credentials configured it "
                                       "starts the embedded sandbox (moto, seeded with an incident). Ctrl-C stops it.")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                       help="stdio (default; for Claude Desktop and spawned clients) or http "
                            "(streamable HTTP at /mcp, SSE at /sse, events at /events)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="HTTP bind address (default 127.0.0.1; other addresses need a token: OPSMCP_HTTP_TOKEN "
                            "of at least 32 characters, OPSMCP_TOKENS_FILE or OPSMCP_JWKS_URL)")
    serve.add_argument("--port", type=_port, default=3001, help="HTTP port, 1-65535 (default 3001)")
    serve.add_argument("--allow-writes", action="store_true", help="register write tools (env OPSMCP_ALLOW_WRITES=1)")
    serve.add_argument("--toolsets", help=f"comma-separated subset of {','.join(ALL_TOOLSETS)} (default: all)")
    serve.add_argument("--sandbox", action="store_true",
                       help="use the embedded moto sandbox even when AWS is configured (env OPSMCP_SANDBOX=1)")
    serve.add_argument("--data-dir", help="directory for the log store and audit log (OPSMCP_DATA_DIR)")
    serve.add_argument("--sandbox-port", type=_port,
                       help="port of the embedded sandbox's moto server when this server starts it "
                            "(OPSMCP_SANDBOX_PORT; default a free port)")
    serve.set_defaults(func=cmd_serve)

    sandbox = sub.add_parser("sandbox", help="sandbox scenario tools").add_subparsers(
        dest="sandbox_command", required=True, metavar="SUBCOMMAND")
    seed = sandbox.add_parser("seed", help="seed the incident scenario into an AWS-compatible endpoint",
                              description="Seed the sandbox's incident (queues, DLQs, orders, metrics) into an "
                                          "AWS-compatible endpoint and its log lines into the configured log store. "
                                          "Parts already there are kept and missing or partial ones completed, so "
                                          "a second run finishes a failed one and leaves a complete one alone; "
                                          "--reset replaces the scenario.")
    seed.add_argument("--endpoint-url", required=True, help="the endpoint, e.g. http://localhost:4566 (LocalStack)")
    seed.add_argument("--region", default=None, help="AWS region (default AWS_REGION, else us-east-1)")
    seed.add_argument("--reset", action="store_true",
                      help="empty the scenario's queues, drop the orders table and the log store's lines, then seed")
    seed.add_argument("--data-dir", help="data directory whose log store gets the log lines (OPSMCP_DATA_DIR)")
    seed.set_defaults(func=cmd_sandbox_seed)
    stop = sandbox.add_parser("stop", help="stop the data directory's shared sandbox now",
                              description="Stop the embedded sandbox that the `opsmcp serve` processes of a data "
                                          "directory share (it otherwise stops OPSMCP_SANDBOX_IDLE_SECONDS after the "
                                          "last one left); the next `opsmcp serve` starts a fresh one.")
    stop.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    stop.set_defaults(func=cmd_sandbox_stop)

    logs = sub.add_parser("logs", help="embedded log store").add_subparsers(
        dest="logs_command", required=True, metavar="SUBCOMMAND")
    load = logs.add_parser("load", help="ingest JSON Lines log files ('-' for stdin)")
    load.add_argument("files", nargs="+", help="JSON Lines files; '-' reads stdin")
    load.add_argument("--store", help="store file (default: the one `opsmcp serve` reads: <data dir>/logs.db, "
                                      "or <data dir>/sandbox-logs.db on the sandbox; OPSMCP_LOG_STORE)")
    load.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.add_argument("--to", choices=["embedded", "opensearch", "cloudwatch", "loki"],
                      help="log backend (default OPSMCP_LOG_BACKEND)")
    load.add_argument("--index", help="OpenSearch index to write (default: from OPSMCP_OPENSEARCH_INDEX, cwl-opsmcp)")
    load.add_argument("--group", help="CloudWatch Logs group to write (default: the first named group of "
                                      "OPSMCP_CLOUDWATCH_LOG_GROUPS, else /opsmcp/logs)")
    load.set_defaults(func=cmd_logs_load)

    audit = sub.add_parser("audit", help="the write audit log").add_subparsers(
        dest="audit_command", required=True, metavar="SUBCOMMAND")
    tail = audit.add_parser("tail", help="print the last audit records")
    tail.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    tail.add_argument("--json", action="store_true", help="JSON Lines instead of text")
    tail.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    tail.set_defaults(func=cmd_audit_tail)

    doctor = sub.add_parser("doctor", help="check configuration and backends",
                            description="Check configuration and backends: one line per check (OK, WARN, FAIL); "
                                        "exit 1 when a check fails.")
    doctor.add_argument("--toolsets", help=f"comma-separated subset of {','.join(ALL_TOOLSETS)} to check")
    doctor.add_argument("--sandbox", action="store_true", help="check as `opsmcp serve --sandbox` would run")
    doctor.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    doctor.set_defaults(func=cmd_doctor)

    token = sub.add_parser("token", help="HTTP bearer tokens (OPSMCP_TOKENS_FILE)").add_subparsers(
        dest="token_command", required=True, metavar="SUBCOMMAND")
    add = token.add_parser("add", help="create a token for SUBJECT; prints it once, stores only its SHA-256")
    add.add_argument("subject", help="who the token identifies (audit caller), e.g. alice or ci-bot")
    add.add_argument("--scopes", default="ops:read",
                     help="comma-separated: ops:read, ops:write, ops:approve (default ops:read)")
    add.add_argument("--file", help=f"tokens file (default OPSMCP_TOKENS_FILE, else <data dir>/{TOKENS_FILE}, which "
                                    "`opsmcp serve` then reads)")
    add.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    add.set_defaults(func=cmd_token_add)

    approvals = sub.add_parser(
        "approvals", help="approval requests of a running server (OPSMCP_WRITE_APPROVAL=human)",
        description="List, show, approve or deny the approval requests of a running opsmcp server over HTTP, as "
                    "the identity of the token given (approve and deny need scope ops:approve).").add_subparsers(
        dest="approvals_command", required=True, metavar="SUBCOMMAND")
    listing = approvals.add_parser("list", help="pending requests, newest first")
    listing.add_argument("--all", action="store_true", help="every request, not only pending ones")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, 1-500 (default 50)")
    show = approvals.add_parser("show", help="one request: its preview, bound, status and result")
    show.add_argument("id", help="the approval id, apr-...")
    approve = approvals.add_parser("approve", help="approve a request: the write runs now, once, held to its preview")
    approve.add_argument("id", help="the approval id, apr-...")
    deny = approvals.add_parser("deny", help="deny a request: nothing changes")
    deny.add_argument("id", help="the approval id, apr-...")
    deny.add_argument("--reason", required=True, help="why (at most 500 characters); the requester sees it")
    for command in (listing, show, approve, deny):
        command.add_argument("--url", help="the server's base URL (default OPSMCP_URL, else http://127.0.0.1:3001)")
        command.add_argument("--token", help="bearer token (default OPSMCP_TOKEN); --token=VALUE if it starts with -")
        command.add_argument("--json", action="store_true", help="print the API's JSON")
        command.set_defaults(func=cmd_approvals)
    return parser


def _one_line(exc: Exception, args: argparse.Namespace) -> tuple[str, int]:
    """One line (and an exit code) for an exception a command let through."""
    from pydantic import ValidationError

    from opsmcp.errors import OpsError

    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        return f"invalid configuration: {problems}", 2
    if isinstance(exc, OpsError):
        return str(exc), 1
    if type(exc).__module__.startswith(("botocore", "boto3")):
        from opsmcp.backends.aws import map_aws_error

        endpoint = getattr(args, "endpoint_url", None) or "AWS"
        return str(map_aws_error(exc, endpoint, f"run `opsmcp {args.command}`")), 1
    if isinstance(exc, ImportError):
        return (f"a package is missing ({exc}); install the extras: pip install 'opsmcp[all]' "
                "(sandbox: moto, playbooks: ansible)"), 1
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc), 1
    return (f"unexpected error: {type(exc).__name__}: {exc} (this is an opsmcp bug; "
            "OPSMCP_LOG_LEVEL=DEBUG shows the traceback)"), 1


if __name__ == "__main__":
    sys.exit(main())
