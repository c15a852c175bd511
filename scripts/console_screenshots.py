"""Screenshots of the console for the docs: the embedded sandbox with a pending approval,
failure groups, live charts, an alert and a write made before the page opened.

    python scripts/console_screenshots.py [--out docs] [--keep-open]

Starts `opsmcp serve --transport http` on the embedded sandbox (mode human, two identities
from a tokens file: ``agent`` may read and write, ``lead`` may read and approve), then as
``agent`` over MCP asks for a redrive that ``lead`` approves over the HTTP API (so the audit
log holds a write before the page opens) and a second one left pending; posts one alert to
the Alertmanager webhook; opens the console in headless Chromium (Debian's chromium and
chromium-driver) as ``lead`` and saves:

- ``console.png``: the whole page with the pending request, charts, groups, alerts, writes;
- ``console-approved.png``: the top of the page after a click on Approve.

With ``--keep-open`` the server keeps running until Enter (prints its URL and lead's token).
Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import OPSMCP, HttpServer, free_port  # noqa: E402

ALERT = {
    "version": "4", "status": "firing", "receiver": "opsmcp", "groupKey": "{}:{alertname=\"OrderProcessorErrors\"}",
    "alerts": [{
        "status": "firing", "fingerprint": "5f1c0a7e9b2d4c11",
        "labels": {"alertname": "OrderProcessorErrors", "severity": "critical", "service": "order-processor"},
        "annotations": {"summary": "order-processor error rate above 5% for 10 minutes"},
        "startsAt": "", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph"}],
}


async def mcp_call(base: str, token: str, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call ``tool`` over streamable HTTP as the identity of ``token``; its structured result."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http, \
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            raise RuntimeError(f"{tool}: {result.content}")
        return dict(result.structured_content or {})


def browser(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page did not show {what} within {timeout:.0f} s")
        time.sleep(0.2)


def main(out: Path, keep_open: bool) -> None:
    from opsmcp.transport.auth import add_token

    data = Path(tempfile.mkdtemp(prefix="opsmcp-shots-"))
    tokens_file = data / "tokens.jsonl"
    agent = add_token(tokens_file, "agent", ["ops:read", "ops:write"])
    lead = add_token(tokens_file, "lead", ["ops:read", "ops:approve"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(OPSMCP_DATA_DIR=str(data), HOME=str(data), OPSMCP_TOKENS_FILE=str(tokens_file),
               OPSMCP_ALLOW_WRITES="true", OPSMCP_WRITE_APPROVAL="human", OPSMCP_EVENTS_POLL_SECONDS="2",
               OPSMCP_ALERTMANAGER_URL="http://127.0.0.1:9", OPSMCP_TOOLSETS="queues,logs,metrics,alerts,orders")
    port = free_port()
    server = HttpServer([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env, port)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            deadline = time.monotonic() + 300
            while http.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not get ready")
                time.sleep(0.5)
            as_lead = {"Authorization": f"Bearer {lead}"}
            done = anyio.run(lambda: mcp_call(base, agent, "redrive_dlq", queue="order-cancellation-queue-dlq",
                                              dry_run=False, max_messages=3))
            answer = http.post(f"/api/approvals/{done['approval_id']}/approve", headers=as_lead, json={})
            assert answer.status_code == 200 and answer.json()["status"] == "done", answer.text
            ALERT["alerts"][0]["startsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1800))
            posted = http.post("/webhooks/alertmanager", headers=as_lead, content=json.dumps(ALERT))
            assert posted.status_code == 200, posted.text
            groups = anyio.run(lambda: mcp_call(base, agent, "analyze_dlq", queue="order-queue-dlq"))["groups"]
            pending = anyio.run(lambda: mcp_call(base, agent, "redrive_dlq", queue="order-queue-dlq", dry_run=False,
                                                 signature=groups[0]["signature"]))
            request_id = pending["approval_id"]
        driver = browser(1360, 900)
        driver.get(f"{base}/#/approvals/{request_id}")
        wait(lambda: driver.execute_script("return !document.getElementById('auth').hidden"), 30, "the token form")
        driver.find_element("id", "token").send_keys(lead)
        driver.find_element("css selector", "#auth button").click()
        wait(lambda: driver.execute_script(
            "return !!document.querySelector(`#inbox .approval[data-id='${arguments[0]}']`)", request_id),
            60, "the pending request")
        wait(lambda: driver.execute_script(
            "return [...document.querySelectorAll('#metric-charts .chart')].every((c) => +c.dataset.points > 0)"
            " && document.querySelectorAll('#metric-charts .chart').length > 0"), 60, "the metric charts")
        wait(lambda: driver.execute_script(
            "return [...document.querySelectorAll('#depth-charts .chart')].some((c) => +c.dataset.points > 10)"),
            60, "the depth charts")
        wait(lambda: driver.execute_script("return !!document.querySelector('#groups table')"), 120, "failure groups")
        wait(lambda: driver.execute_script("return !!document.querySelector('#writes table')"), 30, "the writes")
        time.sleep(1)  # let the last redraw land
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1360, height + 40)
        out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out / "console.png"))
        driver.set_window_size(1360, 900)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.execute_script(
            "document.querySelector(`#inbox .approval[data-id='${arguments[0]}'] button.approve`).click()", request_id)
        wait(lambda: driver.execute_script(
            "const c = document.querySelector(`.approval[data-id='${arguments[0]}']`);"
            "return c && c.dataset.status === 'done'", request_id), 120, "the approved request done")
        wait(lambda: driver.execute_script(
            "return document.querySelectorAll('#writes tbody tr').length >= 2"), 30, "the new write")
        time.sleep(1)
        driver.save_screenshot(str(out / "console-approved.png"))
        for name in ("console.png", "console-approved.png"):
            print(f"{out / name}: {(out / name).stat().st_size // 1024} KiB")
        if keep_open:
            print(f"console: {base}/  lead's token: {lead}  agent's token: {agent}")
            input("Enter stops the server… ")
    except Exception:
        if driver is not None:  # what the page showed, for the error report
            out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out / "console-failed.png"))
            for entry in driver.get_log("browser"):
                print("browser:", entry.get("message"), file=sys.stderr)
            print(f"the page as it was: {out / 'console-failed.png'}", file=sys.stderr)
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNG files go")
    parser.add_argument("--keep-open", action="store_true", help="keep the server running until Enter")
    args = parser.parse_args()
    main(args.out, args.keep_open)
