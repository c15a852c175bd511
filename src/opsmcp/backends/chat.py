"""Chat notifications: a Slack incoming webhook and/or a generic JSON webhook, told about each
pending approval request and each new firing alert, with a link to the console.

:class:`ChatNotifier` is the one adapter to both (httpx). Sending never blocks the caller:
:meth:`ChatNotifier.notify` schedules a task on the running event loop (at most
``max_in_flight`` at once; beyond that a notification is dropped and counted). Each
delivery is bounded: ``timeout`` seconds per attempt, ``attempts`` attempts with
exponential backoff (``backoff`` seconds, doubled each time), retried only on a transport
error, 429 or 5xx.

What is sent (no bearer token, approval secret or raw argument ever goes out; arguments
arrive already redacted like the audit log):

- generic webhook: the JSON payload as given (``type`` ``approval`` or ``alert``, the
  request's redacted arguments, preview, bound, requester, times and ``console_url``; or
  the alert's name, severity, status, start and fingerprint);
- Slack: ``{"text": ...}`` in Slack's mrkdwn, every value from outside escaped (``&``,
  ``<``, ``>``, so alert labels or message signatures cannot forge links or mentions), link
  unfurling off.

A Slack incoming webhook is one-way: a person approves by following the console link.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opsmcp.result_size import cut_text

log = logging.getLogger("opsmcp.backends.chat")

#: Characters of preview text a notification keeps (a longer preview is cut and marked,
#: :func:`~opsmcp.result_size.cut_text`).
MAX_PREVIEW_CHARS = 1_500


def slack_escape(text: Any) -> str:
    """``text`` safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` escaped (Slack's rule), so
    it cannot open a link, a mention or a channel ping."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(payload: dict[str, Any]) -> str:
    """The Slack message for an ``approval`` or ``alert`` payload (mrkdwn, values escaped)."""
    link = payload.get("console_url") or ""
    if payload.get("type") == "approval":
        bound = payload.get("bound") or {}
        held = f" (held to {slack_escape(bound.get('argument'))} ≤ {slack_escape(bound.get('value'))})" if bound else ""
        preview = slack_escape(cut_text(str(payload.get("preview") or ""), MAX_PREVIEW_CHARS)).replace("```", "'''")
        title = f"Approval needed: `{slack_escape(payload.get('tool'))}` requested by " \
                f"{slack_escape(payload.get('requester'))}{held}, expires {slack_escape(payload.get('expires_at'))}"
        review = f"<{link}|Review {slack_escape(payload.get('id'))}>" if link.startswith("http") else \
            f"Review {slack_escape(payload.get('id'))} in the console ({slack_escape(link)})"
        return f"*{title}*\n```{preview}```\n{review}"
    name = slack_escape(payload.get("alertname") or "alert")
    line = (f"*Alert {slack_escape(payload.get('change') or 'firing')}: {name}* "
            f"severity {slack_escape(payload.get('severity') or '?')}, since {slack_escape(payload.get('starts_at'))}")
    return line + (f"\n<{link}|Open the console>" if link.startswith("http") else "")


@dataclass
class ChatNotifier:
    """Sends notifications to a Slack incoming webhook and/or a generic JSON webhook.

    Args:
        slack_url / webhook_url: where to post (either may be None).
        console: the console's base URL (``OPSMCP_PUBLIC_URL``), for alert links; "" when unknown.
        timeout: seconds per attempt. attempts: tries per delivery (>= 1). backoff: seconds
            before the second try, doubled after each further one.
        max_in_flight: deliveries running at once; more are dropped (and counted).
    """

    slack_url: str | None = None
    webhook_url: str | None = None
    console: str = ""
    timeout: float = 5.0
    attempts: int = 3
    backoff: float = 0.5
    max_in_flight: int = 50
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    _tasks: set[asyncio.Task[bool]] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Any) -> ChatNotifier | None:
        """The notifier ``OPSMCP_NOTIFY_SLACK_URL`` / ``OPSMCP_NOTIFY_WEBHOOK_URL`` configure, or None."""
        slack, hook = settings.notify_slack_url, settings.notify_webhook_url
        if slack is None and hook is None:
            return None
        return cls(slack_url=slack.get_secret_value() if slack else None,
                   webhook_url=hook.get_secret_value() if hook else None,
                   console=(settings.public_url or "").rstrip("/"), timeout=settings.notify_timeout_seconds)

    # ------------------------------------------------------------------ what to send ---
    def approval(self, view: dict[str, Any]) -> None:
        """Notify about a new approval request (``view``: the request as the HTTP API shows
        it, arguments already redacted). Never blocks, never raises."""
        keep = ("id", "tool", "arguments", "preview", "bound", "requester", "created_at", "expires_at", "status",
                "console_url")
        payload = {"type": "approval"} | {k: view.get(k) for k in keep}
        payload["preview"] = cut_text(str(payload.get("preview") or ""), MAX_PREVIEW_CHARS)
        self.notify(payload)

    def alert(self, event: dict[str, Any]) -> None:
        """Notify about an alert event of the ``/events`` feed when it is a new or re-fired
        firing alert (resolved and repeated ones are not sent)."""
        if event.get("change") not in ("new", "refired") or event.get("status") != "firing":
            return
        keep = ("change", "alertname", "severity", "status", "starts_at", "fingerprint")
        self.notify({"type": "alert"} | {k: event.get(k) for k in keep} | {"console_url": f"{self.console}/"})

    def observe(self, event: Any) -> None:
        """An ``/events`` hub observer: alert events go to :meth:`alert`."""
        if getattr(event, "type", None) == "alert":
            self.alert(event.data)

    # ------------------------------------------------------------------ delivery -------
    def notify(self, payload: dict[str, Any]) -> None:
        """Schedule delivery of ``payload`` to every configured receiver (on the running
        loop; without one, or with ``max_in_flight`` deliveries running, it is dropped)."""
        targets = [(url, body) for url, body in ((self.webhook_url, payload),
                                                 (self.slack_url, {"text": slack_text(payload), "unfurl_links": False,
                                                                   "unfurl_media": False})) if url]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.dropped += len(targets)
            log.warning("chat notification dropped: no event loop to send it from")
            return
        for url, body in targets:
            if len(self._tasks) >= self.max_in_flight:
                self.dropped += 1
                log.warning("chat notification to %s dropped: %d deliveries already running", _host(url),
                            len(self._tasks))
                continue
            task = loop.create_task(self.deliver(url, body), name="opsmcp-chat-notify")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver(self, url: str, body: dict[str, Any]) -> bool:
        """POST ``body`` as JSON to ``url``, retrying as the class doc says. True when a
        receiver answered 2xx; failures are logged (host only: webhook URLs hold secrets)."""
        import httpx  # imported here: a server without chat notifications never loads it

        delay = self.backoff
        for attempt in range(1, max(1, self.attempts) + 1):
            why = ""
            try:
                async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                    resp = await http.post(url, json=body, headers={"User-Agent": "opsmcp-notify"})
                if resp.is_success:
                    self.sent += 1
                    return True
                why = f"HTTP {resp.status_code}"
                if resp.status_code != 429 and resp.status_code < 500:
                    break  # the receiver refuses this payload: trying again will not help
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning("chat notification to %s failed (%s) after %d attempt(s)", _host(url), why, attempt)
        return False

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests, and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _host(url: str) -> str:
    """The host of ``url`` only (a webhook URL's path is its secret)."""
    return urlsplit(url).netloc or "?"
