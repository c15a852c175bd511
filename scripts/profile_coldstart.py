#!/usr/bin/env python3
"""Where ``opsmcp serve``'s start-up goes beyond the bare SDK server, phase by phase.

In this process, with an AWS endpoint configured (no sandbox): the SDK's own import (which
the bare server pays too), opsmcp's modules, ``Settings()``, then ``build_server`` split
into its phases (toolsets built, the SDK's ``MCPServer`` constructed, tools registered:
``add_tool`` per tool and each toolset's ``check()``, prompts/resources). Wall times in
ms, medians over ``--runs`` fresh interpreters (the script re-runs itself with
``--once``). Run ``python -m compileall -q src`` first (what a wheel install does; this
machine sets ``PYTHONDONTWRITEBYTECODE=1``).

As ``opsmcp serve`` does, the garbage collector is paused for the whole start-up
(``opsmcp.calls.heap.pause_for_start_up``; ``--gc`` leaves it on, as before). The runs share
one fresh data directory, so the output schemas come from its cache
(``opsmcp.surface.tool_schemas.OutputSchemas``) after a first run that fills it and is not
counted; ``--cold-cache`` gives every run a fresh data directory (a first start).

Usage: python scripts/profile_coldstart.py [--runs 5] [--gc] [--cold-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def once() -> dict[str, float]:
    """One start-up in this interpreter; ``{phase: ms}``."""
    os.environ.setdefault("OPSMCP_AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    clock = time.perf_counter
    out: dict[str, float] = {}
    if "--gc" not in sys.argv:
        from opsmcp.calls.heap import pause_for_start_up

        pause_for_start_up()
    t0 = clock()
    import mcp.server  # noqa: F401 - the SDK (the bare server imports it too)

    out["SDK import (bare server too)"] = clock() - t0
    t0 = clock()
    import opsmcp.server as server_module
    import opsmcp.surface.completions as completions
    from opsmcp.config import Settings
    from opsmcp.logsetup import configure

    configure("WARNING")  # as `opsmcp serve` does first (MCPServer() then skips the SDK's rich handler)
    out["opsmcp modules + pydantic-settings"] = clock() - t0
    t0 = clock()
    settings = Settings()
    out["Settings()"] = clock() - t0

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                out[label] = out.get(label, 0.0) + clock() - start

        setattr(owner, name, wrapper)

    timed(server_module, "build_toolsets", "build_toolsets (imports the toolsets)")
    timed(server_module, "OpsServer", "MCPServer() (bare server too)")
    timed(server_module.MCPServer, "add_tool", "add_tool x tools (SDK schema derivation)")
    timed(completions, "register_prompts_and_resources", "prompts, resources, completions")
    from opsmcp.toolsets.playbooks import PlaybookTools

    timed(PlaybookTools, "check", "playbooks check (catalog, ansible)")
    t0 = clock()
    server_module.build_server(settings)
    out["build_server total"] = clock() - t0
    return {k: v * 1000 for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreters (default 5)")
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help="leave the garbage collector on during start-up")
    ap.add_argument("--cold-cache", action="store_true", help="a fresh data directory (no schema cache) per run")
    args = ap.parse_args()
    if args.once:
        print(json.dumps(once()))
        return 0
    import tempfile

    shared = tempfile.mkdtemp(prefix="opsmcp-profile-")
    flags = ["--gc"] if args.gc else []

    def run() -> dict[str, float]:
        data = tempfile.mkdtemp(prefix="opsmcp-profile-") if args.cold_cache else shared
        env = dict(os.environ, OPSMCP_DATA_DIR=data)
        done = subprocess.run([sys.executable, __file__, "--once", *flags], capture_output=True, text=True,
                              check=True, timeout=120, env=env)
        return dict(json.loads(done.stdout))

    if not args.cold_cache:
        run()  # fills the schema cache
    runs = [run() for _ in range(max(1, args.runs))]
    print(f"== opsmcp start-up phases, ms (median of {len(runs)} fresh interpreters; "
          f"load {os.getloadavg()[0]:.1f}; garbage collector {'on' if args.gc else 'paused as in opsmcp serve'}; "
          f"schema cache {'empty (first start)' if args.cold_cache else 'filled'}) ==")
    for phase in runs[0]:
        values = [r.get(phase, 0.0) for r in runs]
        print(f"  {phase:44s} {statistics.median(values):7.1f}   (min {min(values):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
