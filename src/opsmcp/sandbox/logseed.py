"""Write the scenario's log lines into a log store in a child process.

The embedded sandbox seeds SQS, DynamoDB and CloudWatch in the server's process while the
server itself is being built; both hold the GIL most of the time. The log store (12,001
lines, about 0.4 s of CPU) is local, so it is written by a separate Python process, on
the other core: :func:`start` launches it, :meth:`LogSeeding.wait` collects the result.

Run as ``python -m opsmcp.sandbox.logseed STORE NOW`` (``NOW``: the scenario's ISO-8601
anchor, so the lines tell the same story, at the same times, as the parent's queues).
It prints the number of lines loaded on stdout.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsmcp.sandbox.scenario import Scenario


class LogSeeding:
    """A running child process that seeds a log store."""

    def __init__(self, proc: subprocess.Popen[str], path: Path) -> None:
        self.proc = proc
        self.path = path

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the child; return the number of lines it loaded.

        Raises:
            RuntimeError: the child failed (its last stderr line says why) or timed out.
        """
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"seeding the log store {self.path} took longer than {timeout:.0f} s") from None
        if self.proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"seeding the log store {self.path} failed: {last}")
        return int(out.strip() or 0)

    def kill(self) -> None:
        """Stop the child if it still runs (the server is exiting)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(path: Path, now: datetime) -> LogSeeding:
    """Start seeding the scenario anchored at ``now`` into the store at ``path`` (recreated)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsmcp.sandbox.logseed", str(path), now.isoformat()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return LogSeeding(proc, path)


def seed_logs(path: Path, scenario: Scenario) -> int:
    """Recreate the log store at ``path`` holding the scenario's log lines; return their count."""
    from opsmcp.backends.logstore import LogStore

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = LogStore(path)
    try:
        report = store.ingest((line.to_json() for line in scenario.log_lines()), source="sandbox")
    finally:
        store.close()
    return report.loaded


def main(argv: list[str]) -> int:
    """The child: ``STORE NOW`` → recreate STORE with the scenario's lines; print the count."""
    from opsmcp.sandbox.scenario import build_scenario

    path, now = Path(argv[0]), datetime.fromisoformat(argv[1])
    print(seed_logs(path, build_scenario(now)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
