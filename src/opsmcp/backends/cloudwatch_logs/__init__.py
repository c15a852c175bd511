"""The CloudWatch Logs log backend (boto3): one adapter, in three small modules.

- :mod:`.query` — Logs Insights queries and FilterLogEvents patterns as pure functions
  (every argument escaped into regex literals; pinned by tests);
- :mod:`.adapter` — :class:`CloudWatchLogs`, the :class:`~opsmcp.backends.logbackend.LogBackend`
  (Insights with a bounded wait and a byte cap, or FilterLogEvents matched here);
- :mod:`.load` — ``opsmcp logs load --to cloudwatch`` (bounded, idempotent batches).
"""

from opsmcp.backends.cloudwatch_logs.adapter import CloudWatchLogs, query_mode

__all__ = ["CloudWatchLogs", "query_mode"]
