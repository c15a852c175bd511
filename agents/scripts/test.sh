#!/usr/bin/env bash
# Run the agent's tests in .venv-agent (run scripts/setup.sh first).
#   agents/scripts/test.sh            all tests, including the slow real-model one
#   agents/scripts/test.sh -m 'not slow'   skip the real local model
# Extra arguments go to pytest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AGENTS="$(dirname "$HERE")"
ROOT="$(dirname "$AGENTS")"
VENV="${OPSMCP_AGENT_VENV:-$ROOT/.venv-agent}"
cd "$AGENTS"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
