#!/usr/bin/env bash
# LocalStack ready hook (/etc/localstack/init/ready.d): seed the incident scenario.
#
# Installs opsmcp (without extras) from the repository mounted at $OPSMCP_SRC into a venv
# on the `seed-venv` volume (once; later starts reuse it), then runs
#   opsmcp sandbox seed --endpoint-url http://localhost:4566
# which creates the queues and DLQs (with their dead letters), the orders table and the
# CloudWatch metrics of the sandbox's incident. A failure here marks LocalStack's
# /_localstack/init/ready script as ERROR, so the compose healthcheck stays unhealthy.
set -euo pipefail
SRC="${OPSMCP_SRC:-/opt/opsmcp-src}"
VENV=/opt/opsmcp-venv
if [ ! -x "$VENV/bin/opsmcp" ]; then
  echo "opsmcp seed: installing opsmcp from $SRC into $VENV"
  python3 -m venv "$VENV"
  BUILD="$(mktemp -d)"  # the mount is read-only and a build writes beside the sources
  cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/src" "$BUILD/"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$BUILD"
  rm -rf "$BUILD"
fi
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
"$VENV/bin/opsmcp" sandbox seed --endpoint-url http://localhost:4566
echo "opsmcp seed: the incident scenario is in LocalStack"
