"""The ``opsmcp`` command: serve, sandbox seed, logs load, audit tail, doctor.

Everything human-facing goes to stderr; stdout carries only the MCP stdio wire (serve)
or the command's own output (audit tail).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from opsmcp.config import ALL_TOOLSETS

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _settings(args: argparse.Namespace, **extra: object):
    """Settings from env/TOML with the command-line flags on top."""
    from opsmcp.config import Settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    for flag in ("allow_writes", "sandbox"):
        if getattr(args, flag, False):
            overrides[flag] = True
    if getattr(args, "toolsets", None):
        overrides["toolsets"] = args.toolsets
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the MCP server over stdio or HTTP, on the sandbox when no AWS is configured."""
    from opsmcp.config import aws_configured
    from opsmcp.sandbox import Sandbox, banner, eprint, start_sandbox

    settings = _settings(args)
    if args.transport == "http" and args.host not in LOOPBACK and not settings.http_token:
        print(f"opsmcp: refusing to serve HTTP on {args.host} without a token: anyone who can reach it could call "
              "every tool. Set OPSMCP_HTTP_TOKEN (clients send 'Authorization: Bearer <token>'), or bind 127.0.0.1.",
              file=sys.stderr)
        return 2
    sandboxes: list[Sandbox] = []
    needs_sandbox = settings.sandbox or not aws_configured(settings)
    if needs_sandbox:
        settings.sandbox = True
        settings.aws_endpoint_url = "http://127.0.0.1:1"  # replaced once the sandbox is up
        settings.log_store = settings.data_dir / "sandbox-logs.db"  # the sandbox's story, recreated each start
    from opsmcp.server import build_server

    server, runtime = build_server(settings)
    if needs_sandbox:
        # tools/list answers at once; tool calls wait (runtime.wait_ready) until seeding is done.
        runtime.ready.clear()

        def boot() -> None:
            try:
                sandbox = start_sandbox(settings)
                settings.aws_endpoint_url = sandbox.endpoint
                sandboxes.append(sandbox)
                eprint(banner(sandbox))
            except Exception as exc:
                logging.getLogger("opsmcp").exception("sandbox start-up failed")
                runtime.startup_error = f"the embedded sandbox failed to start: {type(exc).__name__}: {exc}"
            finally:
                runtime.ready.set()

        threading.Thread(target=boot, name="opsmcp-sandbox", daemon=True).start()
    for toolset, why in runtime.disabled.items():
        eprint(f"opsmcp: the {toolset} toolset is DISABLED: {why}")
    eprint(f"opsmcp {args.transport}: {len(runtime.tools)} tools ({', '.join(sorted(runtime.tools))}); "
           f"writes {'ENABLED' if settings.allow_writes else 'disabled'}"
           + ("; starting the embedded sandbox (no AWS endpoint or credentials configured)" if needs_sandbox else ""))
    try:
        if args.transport == "stdio":
            import anyio

            anyio.run(server.run_stdio_async)
        else:
            import uvicorn

            from opsmcp.http import build_app

            eprint(f"opsmcp http: streamable HTTP at http://{args.host}:{args.port}/mcp, SSE at /sse, events at /events")
            uvicorn.run(build_app(server, runtime, host=args.host), host=args.host, port=args.port,
                        log_level="warning", lifespan="on")
    except KeyboardInterrupt:
        pass
    finally:
        for sandbox in sandboxes:
            sandbox.stop()
    return 0


def cmd_sandbox_seed(args: argparse.Namespace) -> int:
    """Seed the incident scenario into any AWS-compatible endpoint."""
    from opsmcp.sandbox import eprint
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    settings = _settings(args, aws_endpoint_url=args.endpoint_url, aws_region=args.region)
    counts = seed_aws(settings, build_scenario())
    eprint(f"seeded {args.endpoint_url}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    """Print the last N audit records (oldest first), as text or JSON Lines."""
    import json

    from opsmcp.audit import format_records
    from opsmcp.backends.aws import AwsClients
    from opsmcp.server import build_audit

    settings = _settings(args)
    records = build_audit(settings, AwsClients(settings)).tail(args.n)
    if args.json:
        print("\n".join(json.dumps(r, default=str) for r in records))
    elif records:
        print(format_records(records))
    else:
        print(f"(no audit records in {settings.audit_table or settings.audit_log_path})", file=sys.stderr)
    return 0


def cmd_logs_load(args: argparse.Namespace) -> int:
    """Load JSON Lines log files (or stdin) into the embedded log store."""
    from opsmcp.backends.logstore import LogStore

    settings = _settings(args)
    path = Path(args.store) if args.store else settings.log_store_path
    report = LogStore(path).load_files(args.files, show_progress=not args.quiet)
    print(report.summary(), file=sys.stderr)
    return 0 if report.loaded or not report.bad else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check configuration and every backend; print one line per check; exit 1 on a failure."""
    import os

    import anyio

    from opsmcp.backends.aws import aws_call
    from opsmcp.config import aws_configured
    from opsmcp.errors import OpsError
    from opsmcp.server import build_server

    settings = _settings(args)
    _, runtime = build_server(settings)
    results: list[tuple[str, bool, str]] = []

    async def probe(label: str, what: str, fn, **kwargs) -> None:
        try:
            resp = await aws_call(runtime.clients, what, fn, **kwargs)
            results.append((label, True, _describe(resp)))
        except OpsError as exc:
            results.append((label, False, str(exc)))

    async def checks() -> None:
        if "queues" in runtime.toolsets:
            sqs = runtime.clients.client("sqs")
            await probe("sqs", "list queues", sqs.list_queues, MaxResults=1000)
        if "orders" in runtime.toolsets:
            ddb = runtime.clients.client("dynamodb")
            await probe("orders table", f"describe table {settings.orders_table}", ddb.describe_table,
                        TableName=settings.orders_table)

    if aws_configured(settings):
        anyio.run(checks)
    else:
        results.append(("aws", False, "no AWS endpoint or credentials configured: `opsmcp serve` starts the sandbox"))
    from opsmcp.backends.prometheus import check_reachability

    results += check_reachability(settings)  # Prometheus, Alertmanager, alert webhook (when configured)
    for name in runtime.toolsets:
        why = runtime.disabled.get(name)
        results.append((f"toolset {name}", why is None, why or "loaded"))
    if "logs" in runtime.toolsets:
        store = settings.log_store_path
        results.append(("log store", store.exists(), str(store) if store.exists() else
                        f"{store} does not exist yet: `opsmcp logs load FILE` creates it"))
    if settings.audit_table:
        results.append(("audit", True, f"DynamoDB table {settings.audit_table} (checked on first write)"))
    else:
        path = settings.audit_log_path
        parent = next((p for p in [path.parent, *path.parents] if p.exists()), path.parent)
        writable = os.access(path if path.exists() else parent, os.W_OK)
        results.append(("audit", writable, str(path) if writable else f"{path} is not writable"))
    for label, ok, detail in results:
        print(f"{'OK  ' if ok else 'FAIL'} {label}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def _describe(resp: dict) -> str:
    """One line about a probe answer (ListQueues / DescribeTable)."""
    if "Table" in resp:
        t = resp["Table"]
        indexes = ", ".join(i["IndexName"] for i in t.get("GlobalSecondaryIndexes", [])) or "none"
        return f"{t['TableName']} {t['TableStatus']}, {t.get('ItemCount', '?')} items, indexes: {indexes}"
    return f"{len(resp.get('QueueUrls', []))} queues visible"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opsmcp`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="opsmcp", description="MCP server for safe production operations.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3001)
    serve.add_argument("--allow-writes", action="store_true", help="register write tools (env OPSMCP_ALLOW_WRITES=1)")
    serve.add_argument("--toolsets", help=f"comma-separated subset of {','.join(ALL_TOOLSETS)} (default: all)")
    serve.add_argument("--sandbox", action="store_true", help="force the embedded moto sandbox")
    serve.add_argument("--data-dir", help="directory for the log store and audit log (OPSMCP_DATA_DIR)")
    serve.set_defaults(func=cmd_serve)

    sandbox = sub.add_parser("sandbox", help="sandbox scenario tools").add_subparsers(dest="sandbox_command", required=True)
    seed = sandbox.add_parser("seed", help="seed the incident scenario into an AWS-compatible endpoint")
    seed.add_argument("--endpoint-url", required=True, help="e.g. http://localhost:4566 (LocalStack)")
    seed.add_argument("--region", default=None)
    seed.set_defaults(func=cmd_sandbox_seed)

    logs = sub.add_parser("logs", help="embedded log store").add_subparsers(dest="logs_command", required=True)
    load = logs.add_parser("load", help="ingest JSON Lines log files ('-' for stdin)")
    load.add_argument("files", nargs="+", help="JSON Lines files; '-' reads stdin")
    load.add_argument("--store", help="store file (default <data dir>/logs.db, OPSMCP_LOG_STORE)")
    load.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(func=cmd_logs_load)

    audit = sub.add_parser("audit", help="the write audit log").add_subparsers(dest="audit_command", required=True)
    tail = audit.add_parser("tail", help="print the last audit records")
    tail.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    tail.add_argument("--json", action="store_true", help="JSON Lines instead of text")
    tail.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    tail.set_defaults(func=cmd_audit_tail)

    doctor = sub.add_parser("doctor", help="check configuration and backends")
    doctor.add_argument("--toolsets", help="comma-separated subset to check")
    doctor.add_argument("--data-dir", help="data directory (OPSMCP_DATA_DIR)")
    doctor.set_defaults(func=cmd_doctor)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # a CLI user gets one line, not a traceback
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            print(f"opsmcp: invalid configuration: {exc}", file=sys.stderr)
            return 2
        from opsmcp.errors import OpsError

        if isinstance(exc, OpsError):
            print(f"opsmcp: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
