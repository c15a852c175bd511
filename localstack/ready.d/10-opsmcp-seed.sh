#!/usr/bin/env bash
# LocalStack ready hook (/etc/localstack/init/ready.d): seed the incident scenario.
#
# Installs opsmcp with the opensearch extra (hook 20 loads logs with it) from the repository
# at $OPSMCP_SRC into the venv $OPSMCP_SEED_VENV (the `seed-venv` volume in compose; once:
# later starts reuse it, and a venv without the extra is reinstalled), then runs
#   opsmcp sandbox seed --endpoint-url $OPSMCP_SEED_ENDPOINT_URL
# which creates the queues and DLQs (with their dead letters), the orders table and the
# CloudWatch metrics of the sandbox's incident. Seeding resumes: a part already there
# (queues, messages, orders, metrics) is kept, a missing or partial one is completed, so a
# hook that failed half-way finishes on the next start. A failure here marks LocalStack's
# /_localstack/init/ready script as ERROR, so the compose healthcheck stays unhealthy.
#
# Variables (defaults are compose's container paths):
#   OPSMCP_SRC              the repository (read-only is fine)       /opt/opsmcp-src
#   OPSMCP_SEED_VENV        the venv to install opsmcp into           /opt/opsmcp-venv
#   OPSMCP_SEED_PYTHON      the Python that creates it                python3
#   OPSMCP_SEED_ENDPOINT_URL  LocalStack's own address                http://localhost:4566
set -euo pipefail
SRC="${OPSMCP_SRC:-/opt/opsmcp-src}"
VENV="${OPSMCP_SEED_VENV:-/opt/opsmcp-venv}"
PYTHON="${OPSMCP_SEED_PYTHON:-python3}"
ENDPOINT="${OPSMCP_SEED_ENDPOINT_URL:-http://localhost:4566}"
if [ ! -x "$VENV/bin/opsmcp" ] || ! "$VENV/bin/python" -c "import opensearchpy" 2>/dev/null; then
  echo "opsmcp seed: installing opsmcp[opensearch] from $SRC into $VENV"
  "$PYTHON" -m venv "$VENV"
  BUILD="$(mktemp -d)"  # the mount is read-only and a build writes beside the sources
  trap 'rm -rf "$BUILD"' EXIT
  cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/src" "$SRC/tools" "$BUILD/"  # tools/: the playbook catalog
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$BUILD[opensearch]"
fi
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
# The logs go to OpenSearch (hook 20), not to an embedded store inside this container.
OPSMCP_TOOLSETS=queues,orders,metrics "$VENV/bin/opsmcp" sandbox seed --endpoint-url "$ENDPOINT"
echo "opsmcp seed: the incident scenario is in LocalStack"
