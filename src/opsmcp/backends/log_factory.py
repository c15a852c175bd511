"""Which log engine answers: builds the one ``OPSMCP_LOG_BACKEND`` names.

Kept apart from the interface (:mod:`opsmcp.backends.logbackend`) so the interface never
imports its implementations; each engine's package is imported only when it is selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from opsmcp.backends.logbackend import Check, LogBackend

if TYPE_CHECKING:
    from opsmcp.config import Settings


def build_log_backend(settings: Settings, *,
                      kind: Literal["embedded", "opensearch", "cloudwatch", "loki"] | None = None) -> LogBackend:
    """The log engine ``settings.log_backend`` names (or ``kind``), ready to query.

    ``embedded``: the SQLite store at ``settings.log_store_path``, read-only. Each other
    engine's package is imported only when it is selected.

    Raises:
        OpsError: OpenSearch selected without ``OPSMCP_OPENSEARCH_URL`` or without opensearch-py;
            CloudWatch without ``OPSMCP_CLOUDWATCH_LOG_GROUPS``; Loki without ``OPSMCP_LOKI_URL``
            (or with a malformed selector or field name).
    """
    kind = kind or settings.log_backend
    if kind == "cloudwatch":
        from opsmcp.backends.cloudwatch_logs import CloudWatchLogs

        return CloudWatchLogs.from_settings(settings)
    if kind == "loki":
        from opsmcp.backends.loki import LokiLogs

        return LokiLogs.from_settings(settings)
    if kind == "opensearch":
        from opsmcp.backends.opensearch import OpenSearchLogs

        return OpenSearchLogs.from_settings(settings)
    from opsmcp.backends.logstore import LogStore

    return LogStore(settings.log_store_path, readonly=True)


def log_backend_checks(settings: Settings) -> list[Check]:
    """What ``opsmcp doctor`` prints about the selected log engine (never raises)."""
    from opsmcp.errors import OpsError

    try:
        backend = build_log_backend(settings)
    except OpsError as exc:
        return [Check(f"log backend {settings.log_backend}", False, str(exc))]
    try:
        return backend.check()
    finally:
        backend.close()
