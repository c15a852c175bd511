"""The Loki log backend (httpx): one adapter, in four small modules.

- :mod:`.logql` — LogQL as pure functions, every value through one escaping function
  (pinned by tests and parsed by Grafana's own LogQL grammar);
- :mod:`.client` — the HTTP client from settings (bearer/basic auth, X-Scope-OrgID) and
  Loki's errors as tool errors;
- :mod:`.adapter` — :class:`LokiLogs`, the :class:`~opsmcp.backends.logbackend.LogBackend`;
- :mod:`.load` — ``opsmcp logs load --to loki`` (push API).
"""

from opsmcp.backends.loki.adapter import LokiLogs

__all__ = ["LokiLogs"]
