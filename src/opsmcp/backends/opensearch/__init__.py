"""The OpenSearch log backend (opensearch-py): one adapter, in four small modules.

- :mod:`.query` — request bodies as pure functions (full-text translation, exact
  filters by mapping, windows, histograms);
- :mod:`.client` — the client from settings (basic, bearer, SigV4; TLS; timeouts) and
  engine errors as tool errors;
- :mod:`.adapter` — :class:`OpenSearchLogs`, the :class:`~opsmcp.backends.logbackend.LogBackend`;
- :mod:`.load` — bulk loading JSON Lines (``opsmcp logs load --to opensearch``).
"""

from opsmcp.backends.opensearch.adapter import OpenSearchLogs
from opsmcp.backends.opensearch.load import INDEX_TEMPLATE, default_index, load_jsonl

__all__ = ["INDEX_TEMPLATE", "OpenSearchLogs", "default_index", "load_jsonl"]
