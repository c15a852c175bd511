#!/usr/bin/env bash
# LocalStack ready hook: put the incident's application logs into OpenSearch.
#
# 1. PUT the index template ($OPSMCP_SEED_DIR/opensearch/index-template.json): ids such as
#    trace_id, event_id and order_id are `keyword`, so an exact trace search matches one
#    trace (the original design mapped them as `text`, which splits UUIDs into tokens).
# 2. Write the sandbox scenario's log lines (JSON Lines) and load them with
#    `opsmcp logs load --to opensearch --index cwl-opsmcp` (the OpenSearch log backend's
#    loader, configured by the variables exported below; a document's id is a hash of its
#    line, so a load that is run again stores each line once).
# Runs after 10-opsmcp-seed.sh, which installs opsmcp with the opensearch extra into the venv.
#
# Variables (defaults are compose's): OPSMCP_SEED_VENV (/opt/opsmcp-venv), OPSMCP_SEED_DIR
# (/opt/opsmcp-seed), OPENSEARCH_URL (https://opensearch:9200), OPENSEARCH_INITIAL_ADMIN_PASSWORD.
set -euo pipefail
VENV="${OPSMCP_SEED_VENV:-/opt/opsmcp-venv}"
SEED="${OPSMCP_SEED_DIR:-/opt/opsmcp-seed}"
URL="${OPENSEARCH_URL:-https://opensearch:9200}"
AUTH="admin:${OPENSEARCH_INITIAL_ADMIN_PASSWORD:?set it in deploy/opsmcp.env}"
TEMPLATE="$SEED/opensearch/index-template.json"

curl -fsSk -u "$AUTH" -X PUT "$URL/_index_template/opsmcp-logs" \
  -H 'Content-Type: application/json' --data-binary "@$TEMPLATE"
echo

LINES="$(mktemp --suffix=.jsonl)"
trap 'rm -f "$LINES"' EXIT
"$VENV/bin/python" - "$LINES" <<'PY'
import sys

from opsmcp.sandbox.scenario import build_scenario

with open(sys.argv[1], "w") as out:
    for line in build_scenario().log_lines():
        out.write(line.to_json() + "\n")
PY

export OPSMCP_LOG_BACKEND=opensearch OPSMCP_OPENSEARCH_URL="$URL" OPSMCP_OPENSEARCH_AUTH=basic \
  OPSMCP_OPENSEARCH_USERNAME=admin OPSMCP_OPENSEARCH_PASSWORD="${OPENSEARCH_INITIAL_ADMIN_PASSWORD}" \
  OPSMCP_OPENSEARCH_VERIFY_TLS=false OPSMCP_OPENSEARCH_INDEX=cwl-opsmcp
"$VENV/bin/opsmcp" logs load --to opensearch --index cwl-opsmcp --quiet "$LINES"
echo "opsmcp seed: $(wc -l < "$LINES") log lines in OpenSearch index cwl-opsmcp"
