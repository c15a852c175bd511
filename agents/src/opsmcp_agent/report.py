"""Alertmanager webhooks in, root-cause reports out.

:func:`parse_alertmanager` validates a webhook payload (Alertmanager's ``version: "4"``
shape), :func:`describe_alerts` turns it into the question the agent investigates,
:func:`parse_report` reads the model's JSON report (tolerantly), :func:`render_markdown`
formats it and :func:`post_report` sends it to a Slack-compatible incoming webhook.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .agent import RunResult
from .errors import AgentError, BadInput

SEVERITIES = ("critical", "high", "medium", "low")
CONFIDENCES = ("high", "medium", "low")
_LABEL_SEVERITY = {
    "critical": "critical",
    "page": "critical",
    "error": "high",
    "high": "high",
    "warning": "medium",
    "warn": "medium",
    "medium": "medium",
    "info": "low",
    "low": "low",
}


@dataclass
class Alert:
    """One alert of a webhook payload.

    Attributes:
        status: ``"firing"`` or ``"resolved"``.
        labels: the alert's labels (``alertname``, ``severity``, ``service``, ...).
        annotations: its annotations (``summary``, ``description``, ...).
        starts_at: RFC 3339 start time as sent, or ``""``.
    """

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str = ""

    @property
    def name(self) -> str:
        """The ``alertname`` label, or ``"(unnamed alert)"``."""
        return self.labels.get("alertname", "(unnamed alert)")


def parse_alertmanager(text: str) -> list[Alert]:
    """Parse and validate an Alertmanager webhook payload.

    Args:
        text: the JSON body Alertmanager POSTs to a webhook receiver
            (``{"version": "4", "status": ..., "alerts": [{"status", "labels",
            "annotations", "startsAt", ...}], "commonLabels": ...}``).

    Returns:
        The alerts, firing ones first.

    Raises:
        BadInput: not JSON, not an object, no non-empty ``alerts`` list, or an alert
            without a ``labels`` object.
    """
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"The alert payload is not valid JSON: {exc}.") from exc
    if not isinstance(payload, dict):
        raise BadInput("The alert payload must be a JSON object (an Alertmanager webhook body).")
    raw = payload.get("alerts")
    if not isinstance(raw, list) or not raw:
        raise BadInput("The alert payload has no 'alerts' list; expected an Alertmanager webhook body.")
    common = payload.get("commonLabels") if isinstance(payload.get("commonLabels"), dict) else {}
    alerts = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
            raise BadInput(f"Alert #{i + 1} has no 'labels' object.")
        labels = {str(k): str(v) for k, v in {**common, **item["labels"]}.items()}
        ann = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
        alerts.append(
            Alert(
                status=str(item.get("status") or payload.get("status") or "firing"),
                labels=labels,
                annotations={str(k): str(v) for k, v in ann.items()},
                starts_at=str(item.get("startsAt") or ""),
            )
        )
    alerts.sort(key=lambda a: a.status != "firing")
    return alerts


def describe_alerts(alerts: list[Alert]) -> str:
    """Render alerts as plain text for the model: name, status, start, labels, annotations."""
    blocks = []
    for i, a in enumerate(alerts, 1):
        lines = [f"Alert {i}: {a.name} ({a.status}" + (f", since {a.starts_at})" if a.starts_at else ")")]
        others = {k: v for k, v in a.labels.items() if k != "alertname"}
        if others:
            lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(others.items())))
        for key in ("summary", "description"):
            if a.annotations.get(key):
                lines.append(f"  {key}: {a.annotations[key]}")
        for key, value in sorted(a.annotations.items()):
            if key not in ("summary", "description"):
                lines.append(f"  {key}: {value}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def alert_severity(alerts: list[Alert]) -> str:
    """The highest severity among the alerts' ``severity`` labels (default ``"medium"``)."""
    found = [_LABEL_SEVERITY.get(a.labels.get("severity", "").lower()) for a in alerts]
    ranked = [s for s in SEVERITIES if s in found]
    return ranked[0] if ranked else "medium"


@dataclass
class Report:
    """A root-cause report.

    Attributes:
        title: the alert name(s).
        summary: what is happening.
        root_cause: the most likely root cause.
        evidence: short statements citing tool results as ``[n]``.
        remediation: concrete next steps.
        severity: one of :data:`SEVERITIES`.
        confidence: one of :data:`CONFIDENCES`.
        parsed: ``True`` when the model returned well-formed JSON; ``False`` when the
            report was assembled from its free text (then confidence is ``"low"``).
        stopped: the run's limit stop reason, if any.
        steps: the tool calls behind the report (JSON-ready dicts).
    """

    title: str
    summary: str
    root_cause: str
    evidence: list[str] = field(default_factory=list)
    remediation: list[str] = field(default_factory=list)
    severity: str = "medium"
    confidence: str = "low"
    parsed: bool = False
    stopped: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of every field."""
        return asdict(self)


def parse_report(text: str, alerts: list[Alert], run: RunResult) -> Report:
    """Build a :class:`Report` from the model's reply to the report instructions.

    Args:
        text: the model's reply; the first JSON object in it is used (code fences and
            prose around it are ignored).
        alerts: the alerts investigated (title and fallback severity).
        run: the investigation (steps become the fallback evidence).

    Returns:
        The report. Missing or invalid fields fall back: severity to the alerts' label
        severity, confidence to ``"low"``, evidence to the run's step summaries; when no
        JSON object can be read the free text becomes the summary and ``parsed`` is
        ``False``.
    """
    title = ", ".join(dict.fromkeys(a.name for a in alerts))
    data = _first_json_object(text)
    fallback_evidence = [f"[{s.index}] {s.tool}: {s.summary}" for s in run.steps]
    if data is None:
        return Report(
            title=title,
            summary=(text or run.answer).strip() or "The model produced no report.",
            root_cause="Undetermined (the model did not return a structured report).",
            evidence=fallback_evidence,
            remediation=[],
            severity=alert_severity(alerts),
            confidence="low",
            parsed=False,
            stopped=run.stopped,
            steps=[s.as_dict() for s in run.steps],
        )
    severity = str(data.get("severity", "")).lower()
    confidence = str(data.get("confidence", "")).lower()
    return Report(
        title=title,
        summary=str(data.get("summary") or run.answer).strip(),
        root_cause=str(data.get("root_cause") or "Undetermined.").strip(),
        evidence=_str_list(data.get("evidence")) or fallback_evidence,
        remediation=_str_list(data.get("remediation")),
        severity=severity if severity in SEVERITIES else alert_severity(alerts),
        confidence=confidence if confidence in CONFIDENCES else "low",
        parsed=True,
        stopped=run.stopped,
        steps=[s.as_dict() for s in run.steps],
    )


def render_markdown(report: Report) -> str:
    """Format a report as Markdown (also readable as plain text, and in Slack)."""
    lines = [f"*Incident report: {report.title}*", ""]
    lines.append(f"*Severity:* {report.severity}   *Confidence:* {report.confidence}")
    if report.stopped:
        lines.append(f"_Investigation stopped early ({report.stopped.replace('_', ' ')}); the report is partial._")
    lines += ["", "*Summary*", report.summary, "", "*Likely root cause*", report.root_cause, "", "*Evidence*"]
    lines += [f"• {e}" for e in report.evidence] or ["• (none)"]
    lines += ["", "*Remediation*"]
    lines += [f"{i}. {r}" for i, r in enumerate(report.remediation, 1)] or ["(none suggested)"]
    if report.steps:
        lines += ["", "*Tool calls*"]
        lines += [
            f"[{s['step']}] {s['tool']} {json.dumps(s['args'], ensure_ascii=False)} → {s['summary']}"
            for s in report.steps
        ]
    return "\n".join(lines)


def post_report(url: str, report: Report, *, timeout: float = 10.0) -> int:
    """POST the report to a Slack-compatible incoming webhook.

    Args:
        url: the webhook URL (Slack, Mattermost, Rocket.Chat or anything accepting
            ``{"text": ...}``).
        report: the report; sent as ``{"text": <markdown>, "report": <as_dict>}``.
        timeout: seconds to wait for the webhook.

    Returns:
        The HTTP status code (2xx).

    Raises:
        AgentError: the webhook could not be reached or answered non-2xx.
    """
    body = {"text": render_markdown(report), "report": report.as_dict()}
    try:
        resp = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise AgentError(f"Could not post the report to {url}: {exc}") from exc
    if not 200 <= resp.status_code < 300:
        raise AgentError(f"The webhook {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.status_code


def _first_json_object(text: str) -> dict[str, Any] | None:
    text = re.sub(r"```(?:json)?", "", text or "")
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text[match.start() :])
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return []
