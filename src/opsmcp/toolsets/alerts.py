"""Alerts toolset: the Alertmanager alerts opsmcp received on ``POST /webhooks/alertmanager``.

``list_alerts`` filters and sorts what the alert store holds (firing first, newest start
first); ``get_alert`` returns one alert by fingerprint (or a unique prefix of it) with its
labels, annotations, times, generator URL and how many times it was received. The store
(:mod:`opsmcp.backends.alertstore`) is shared with the webhook route
(:mod:`opsmcp.transport.webhooks`), which reaches it as ``runtime.alerts``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from opsmcp.backends.alertstore import AlertStore, StoredAlert, brief, newest_firing_first
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound, did_you_mean
from opsmcp.results import OutsideText, clamp, untrusted
from opsmcp.times import iso, parse_time
from opsmcp.toolsets.base import tool

DEFAULT_LIMIT = 20
MAX_LIMIT = 200


class AlertSummary(BaseModel):
    """One alert in a list."""

    fingerprint: str = Field(description="Pass to get_alert for labels, annotations and links.")
    alertname: str | None = Field(description="The alertname label.")
    status: str = Field(description="firing or resolved.")
    severity: str | None = Field(description="The severity label, if any.")
    summary: str | None = Field(description="The summary (or description) annotation, cut to 300 characters.")
    starts_at: str | None = Field(description="When it started firing, ISO-8601 UTC.")
    ends_at: str | None = Field(description="When it resolved (or its expected end), ISO-8601 UTC.")
    received_count: int = Field(description="Notifications received for it.")


class AlertListResult(OutsideText):
    """Alerts received from Alertmanager."""

    untrusted: list[str] = untrusted("alerts[]")

    total: int = Field(description="Alerts matching the filters (before the limit).")
    firing: int = Field(description="How many of those are firing.")
    alerts: list[AlertSummary] = Field(description="Firing first, then newest start first.")


class AlertResult(OutsideText):
    """One alert in full."""

    untrusted: list[str] = untrusted("alert.labels", "alert.annotations", "alert.generator_url", "alert.fingerprint")

    alert: StoredAlert = Field(description="The stored alert.")


def _summary(a: StoredAlert) -> AlertSummary:
    return AlertSummary(**brief(a))


class AlertTools:
    """Read tools over the alert store.

    Args:
        settings: server settings.
        store: the alert store (``build_alert_store``), shared with the webhook route.
    """

    def __init__(self, settings: Settings, store: AlertStore) -> None:
        self.settings = settings
        self.store = store

    @tool(title="List received alerts", read_only=True, idempotent=True, open_world=False)
    async def list_alerts(
        self,
        status: Annotated[str | None, Field(description="firing or resolved. Omit for both.", max_length=16)] = None,
        severity: Annotated[
            str | None, Field(description="Only this severity label, e.g. 'critical'.", max_length=64)
        ] = None,
        since: Annotated[
            str | None, Field(description="Only alerts received since: ISO-8601 or relative like '-1h'.", max_length=64)
        ] = None,
        limit: Annotated[int, Field(description="Most alerts to return, 1-200. Default 20.")] = DEFAULT_LIMIT,
    ) -> AlertListResult:
        """List the Alertmanager alerts opsmcp received (de-duplicated by fingerprint),
        firing first. Use get_alert(fingerprint) for one alert's labels and links."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, MAX_LIMIT, notes)
        want = (status or "").strip().lower() or None
        if want not in (None, "firing", "resolved"):
            raise InvalidInput(f"status={status!r} is not firing or resolved.", "omit status for both.")
        sev = (severity or "").strip() or None
        after = iso(parse_time(since, name="since")) if since and since.strip() else None
        alerts = await self.store.all()
        found = newest_firing_first([a for a in alerts if (want is None or a.status == want)
                                     and (sev is None or a.labels.get("severity") == sev)
                                     and (after is None or a.last_received >= after)])
        if not alerts:
            notes.append("no alerts received yet: point an Alertmanager webhook receiver at "
                         "POST /webhooks/alertmanager")
        return AlertListResult(total=len(found), firing=sum(a.status == "firing" for a in found),
                               alerts=[_summary(a) for a in found[:limit]], truncated=len(found) > limit, notes=notes)

    @tool(title="Get one alert", read_only=True, idempotent=True, open_world=False)
    async def get_alert(
        self,
        fingerprint: Annotated[
            str, Field(description="The alert's fingerprint from list_alerts (a unique prefix works).", max_length=64)
        ],
    ) -> AlertResult:
        """One received alert: labels, annotations, start/end, generator URL, first/last
        received and how many times. Raises a not-found error naming close fingerprints."""
        fp = fingerprint.strip()
        if not fp:
            raise InvalidInput("fingerprint is empty.", "take one from list_alerts.")
        found = await self.store.get(fp)
        if found is None and len(fp) >= 4:
            alerts = await self.store.all()
            matches = [a for a in alerts if a.fingerprint.startswith(fp)]
            if len(matches) == 1:
                found = matches[0]
            elif len(matches) > 1:
                raise InvalidInput(f"Fingerprint prefix {fp!r} matches {len(matches)} alerts.",
                                   "give more characters: " + ", ".join(a.fingerprint for a in matches[:5]) + ".")
        if found is None:
            alerts = await self.store.all()
            hint = did_you_mean(fp, [a.fingerprint for a in alerts]) or "list_alerts shows the received alerts."
            raise NotFound(f"No alert with fingerprint {fp!r}.", hint)
        return AlertResult(alert=found)
