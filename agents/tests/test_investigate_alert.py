"""investigate-alert: an Alertmanager payload in, a root-cause report out (and posted).

The scripted model investigates through the real opsmcp over stdio, then writes the
JSON report; the report is posted to a local Slack-compatible webhook receiver.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedChatModel, call, last_tool_message, tool_payload, trace_ids
from langchain_core.messages import AIMessage

from opsmcp_agent.cli import main
from opsmcp_agent.report import parse_alertmanager

ALERT = {
    "version": "4",
    "status": "firing",
    "receiver": "opsmcp",
    "groupLabels": {"alertname": "DLQNotEmpty"},
    "commonLabels": {"alertname": "DLQNotEmpty", "severity": "critical"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DLQNotEmpty", "severity": "critical", "queue": "QUEUE"},
            "annotations": {"summary": "Messages are piling up in QUEUE", "description": "DLQ depth > 0 for 5m"},
            "startsAt": "2026-01-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "abc123",
        }
    ],
}


class Webhook:
    """A local Slack-compatible incoming webhook that records what it receives."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/T000/B000"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_alert_to_report_posted_to_webhook(
    server_cmd: str, sandbox: dict, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dlq = sandbox["dlq"]
    payload = json.loads(json.dumps(ALERT).replace("QUEUE", dlq))
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(payload))

    def trace_step(messages: list) -> AIMessage:
        # the alert reached the model as text
        question = next(m for m in messages if m.type == "human")
        assert "DLQNotEmpty" in str(question.content) and dlq in str(question.content)
        return call("get_trace", {"trace_id": trace_ids(tool_payload(last_tool_message(messages)))[0]})

    report = {
        "summary": f"Orders are failing into {dlq}.",
        "root_cause": "The order processor fails on the failures analyze_dlq grouped.",
        "evidence": [
            f"[1] analyze_dlq grouped the messages in {dlq}",
            f"[2] get_trace {sandbox['trace_id']} shows the failure",
        ],
        "remediation": ["Fix the failing dependency", "Redrive the DLQ after a dry run"],
        "severity": "critical",
        "confidence": "medium",
    }
    script = [
        call("analyze_dlq", {"queue": dlq}),
        trace_step,
        AIMessage("Investigation done [1][2]."),
        AIMessage("Here is the report:\n```json\n" + json.dumps(report) + "\n```"),
    ]
    model = ScriptedChatModel(script=script)
    hook = Webhook()
    try:
        rc = main(
            ["investigate-alert", str(alert_file), "--json", "--post", hook.url, "--server-command", server_cmd],
            chat_model=model,
            stdin=io.StringIO(""),
        )
    finally:
        hook.close()
    out, err = capfd.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["parsed"] is True
    assert doc["title"] == "DLQNotEmpty"
    assert doc["severity"] == "critical" and doc["confidence"] == "medium"
    assert doc["root_cause"] == report["root_cause"] and doc["remediation"] == report["remediation"]
    assert [s["tool"] for s in doc["steps"]] == ["analyze_dlq", "get_trace"]
    assert all(s["ok"] for s in doc["steps"]), doc["steps"]
    # the report instructions were the last thing the model was asked, without new tools
    assert '"root_cause"' in str(model.calls[3][-1].content)
    # posted once, Slack-compatible
    assert len(hook.bodies) == 1
    text = hook.bodies[0]["text"]
    assert "Incident report: DLQNotEmpty" in text and "*Likely root cause*" in text and sandbox["trace_id"] in text
    assert hook.bodies[0]["report"]["severity"] == "critical"
    assert f"posted the report to {hook.url} (HTTP 200)" in err


def test_free_text_report_falls_back_with_low_confidence(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    payload = json.dumps(ALERT).replace("QUEUE", sandbox["dlq"])
    script = [
        call("analyze_dlq", {"queue": sandbox["dlq"]}),
        AIMessage("It is the DLQ [1]."),
        AIMessage("No JSON, sorry."),
    ]
    rc = main(
        ["investigate-alert", "-", "--server-command", server_cmd],
        chat_model=ScriptedChatModel(script=script),
        stdin=io.StringIO(payload),
    )
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert "*Severity:* critical   *Confidence:* low" in out  # severity from the alert's label
    assert "No JSON, sorry." in out and "[1] analyze_dlq" in out


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"alerts": []}', "no 'alerts'"),
        ('{"alerts": [{"x": 1}]}', "labels"),
    ],
)
def test_bad_payload_is_rejected_before_anything_starts(
    body: str, needle: str, capfd: pytest.CaptureFixture[str]
) -> None:
    model = ScriptedChatModel(script=[])
    rc = main(["investigate-alert", "-", "--server-command", "/nonexistent"], chat_model=model, stdin=io.StringIO(body))
    _, err = capfd.readouterr()
    assert rc == 2 and needle in err and model.calls == []


def test_parse_alertmanager_merges_common_labels_and_puts_firing_first() -> None:
    payload = {
        "commonLabels": {"cluster": "prod"},
        "alerts": [
            {"status": "resolved", "labels": {"alertname": "Old"}},
            {
                "status": "firing",
                "labels": {"alertname": "New", "severity": "warning"},
                "annotations": {"summary": "s"},
            },
        ],
    }
    alerts = parse_alertmanager(json.dumps(payload))
    assert [a.name for a in alerts] == ["New", "Old"]
    assert alerts[0].labels == {"cluster": "prod", "alertname": "New", "severity": "warning"}
    assert alerts[0].annotations == {"summary": "s"}


def _store_alert(fingerprint: str, dlq: str) -> None:
    """Write one alert into the opsmcp data dir's alert store (the file the webhook keeps)."""
    import os

    alert = ALERT["alerts"][0]
    stored = {
        "fingerprint": fingerprint,
        "status": "firing",
        "labels": {k: v.replace("QUEUE", dlq) for k, v in alert["labels"].items()},
        "annotations": {k: v.replace("QUEUE", dlq) for k, v in alert["annotations"].items()},
        "starts_at": "2026-01-01T10:00:00.000Z",
        "ends_at": None,
        "generator_url": alert["generatorURL"],
        "first_received": "2026-01-01T10:00:05.000Z",
        "last_received": "2026-01-01T10:00:05.000Z",
        "received_count": 1,
    }
    data_dir = Path(os.environ["OPSMCP_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "alerts.json").write_text(json.dumps({"version": 1, "alerts": [stored]}))


def test_investigate_a_stored_alert_by_fingerprint(
    server_cmd: str, sandbox: dict, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dlq = sandbox["dlq"]
    _store_alert("5f3a9c", dlq)
    monkeypatch.setenv("OPSMCP_ALERTMANAGER_URL", "http://127.0.0.1:9")  # registers the alerts toolset

    def first(messages: list) -> AIMessage:
        question = next(m for m in messages if m.type == "human")
        assert "DLQNotEmpty" in str(question.content) and dlq in str(question.content)
        return call("analyze_dlq", {"queue": dlq})

    script = [first, AIMessage("It is the DLQ [1]."), AIMessage("No JSON.")]
    rc = main(
        ["investigate-alert", "--fingerprint", "5f3a9c", "--server-command", server_cmd],
        chat_model=ScriptedChatModel(script=script),
        stdin=io.StringIO(""),
    )
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert "DLQNotEmpty" in out and "*Severity:* critical" in out
    rc = main(
        ["investigate-alert", "--fingerprint", "nope00", "--server-command", server_cmd],
        chat_model=ScriptedChatModel(script=[]),
        stdin=io.StringIO(""),
    )
    _, err = capfd.readouterr()
    assert rc == 2 and "nope00" in err


def test_file_and_fingerprint_are_exclusive(capfd: pytest.CaptureFixture[str]) -> None:
    for argv in (["investigate-alert"], ["investigate-alert", "-", "--fingerprint", "x"]):
        rc = main([*argv, "--server-command", "/nonexistent"], chat_model=ScriptedChatModel(script=[]),
                  stdin=io.StringIO(""))
        _, err = capfd.readouterr()
        assert rc == 2 and "exactly one" in err
