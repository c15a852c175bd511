"""A moto server in its own process, on a fixed loopback port, that a test can stop and restart.

The session's in-process moto server (conftest ``moto_endpoint``) cannot be killed like a
real backend, and its memory counts in the test process's RSS. This one is a child process
(``moto_server``): :meth:`MotoProcess.stop` kills it (the port refuses connections), and
:meth:`MotoProcess.start` brings it back on the same port with an empty state.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """``moto_server`` on ``127.0.0.1:port`` as a child process.

    Args:
        port: the port (default: a free one); kept across :meth:`stop` / :meth:`start`.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> MotoProcess:
        """Start the server and wait (bounded poll) until it answers; return self.

        Raises:
            RuntimeError: it exited, or did not answer within ``timeout`` seconds.
        """
        self.proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode} (port {self.port} taken?)")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {self.endpoint} within {timeout} s") from None
                time.sleep(0.05)  # readiness poll with a deadline

    def stop(self) -> None:
        """Kill the server (SIGKILL: a backend that vanishes) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None
