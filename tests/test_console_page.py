"""The console at ``/`` in real headless Chromium (Debian's chromium + chromium-driver), as
an on-call engineer uses it: an approval request waits in the inbox and one click on
Approve, by a second identity, moves exactly the previewed messages once; the panels show
what happened before the page opened (a redrive from the audit log, failure groups, an
alert, an hour of metrics and DLQ depth drawn by uPlot) and follow /events afterwards;
outside text (alert annotations, failure signatures) stays text. Screenshots land in
``test-output/`` at the repository root.

Page state is read in one ``execute_script`` per check (the page redraws whole panels,
so element handles found a call earlier may be stale), and every wait polls for a
condition with a deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import (
    CHROMIUM,
    DRIVER,
    HOSTILE_SUMMARY,
    alert_payload,
    bearer,
    console_server,
    mcp_call,
    send_dead_letters,
    send_hostile_dead_letters,
    visible,
)

from opsmcp.calls.audit import read_tail


OUTPUT = Path(__file__).resolve().parents[1] / "test-output"

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run installs them)")


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"the page did not show {what} within {timeout:.0f} s"
        time.sleep(0.1)


def _sign_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(lambda: driver.find_element(By.ID, "auth").is_displayed(), 20, "the token form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#auth button").click()
    _wait(lambda: driver.find_element(By.ID, "status").text == "live", 30, "the live feed")


CARD = """const card = document.querySelector(`#approvals-panel .approval[data-id="${arguments[0]}"]`);
return card ? {status: card.dataset.status, focused: card.classList.contains("focused"),
               inInbox: !!card.closest("#inbox"), text: card.textContent,
               buttons: [...card.querySelectorAll("button")].map((b) => b.textContent)} : null;"""

CHART_PIXELS = """// pixels of the chart's canvas close to the given colour (its first line)
const canvas = document.querySelector(`#${arguments[0]} canvas`);
if (!canvas) return 0;
const [r, g, b] = arguments[1];
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  const near = Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40;
  if (data[i + 3] > 200 && near) n++;
}
return n;"""


def test_one_click_on_approve_by_a_second_identity_moves_exactly_the_previewed_messages(browser, fresh_moto,
                                                                                          tmp_path):
    from selenium.webdriver.common.by import By

    dlq, source = "order-cancellation-queue-dlq", "order-cancellation-queue"
    with console_server(fresh_moto, tmp_path, write_approval="human") as (base, runtime, keys):
        preview = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=5))
        assert preview["status"] == "dry_run" and preview["matched"] == 5
        pending = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=5,
                                             dry_run=False))
        request_id = pending["approval_id"]
        assert pending["status"] == "pending_approval" and pending["moved"] == 0
        send_hostile_dead_letters(fresh_moto, dlq, 3)  # more arrive after the preview: still exactly 5 move
        dlq_before, source_before = visible(fresh_moto, dlq), visible(fresh_moto, source)
        assert dlq_before == 11

        _sign_in(browser, f"{base}/#/approvals/{request_id}", keys["lead"])
        card = _wait(lambda: browser.execute_script(CARD, request_id), 30, "the pending request in the inbox")
        assert card["status"] == "pending" and card["inInbox"] and card["focused"]
        assert "Move 5 message(s)" in card["text"] and "requested by agent" in card["text"]
        assert "max_messages ≤ 5" in card["text"] and card["buttons"] == ["Approve", "Deny"]
        assert browser.execute_script("return sessionStorage.getItem('opsmcp_token')") == keys["lead"]
        assert browser.execute_script("return document.cookie") == ""
        browser.find_element(By.CSS_SELECTOR, f'.approval[data-id="{request_id}"] button.approve').click()
        done = _wait(lambda: (c := browser.execute_script(CARD, request_id)) and c["status"] == "done" and c,
                     120, "the request done")
        assert "done by lead" in done["text"] and "moved 5" in done["text"] and done["buttons"] == []
        OUTPUT.mkdir(exist_ok=True)
        browser.save_screenshot(str(OUTPUT / "console-approved.png"))

        assert visible(fresh_moto, dlq) == dlq_before - 5 and visible(fresh_moto, source) == source_before + 5
        again = httpx.post(f"{base}/api/approvals/{request_id}/approve", headers=bearer(keys["lead"]), json={})
        assert again.status_code == 409
        intents = [r for r in read_tail(runtime.settings.audit_log_path, 200)
                   if r.get("call_id") == request_id and r["phase"] == "intent"]
        assert len(intents) == 1 and intents[0]["arguments"]["max_messages"] == 5
        _wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#writes tbody tr')].some((tr) => tr.dataset.callId === "
            "arguments[0] && tr.textContent.includes('moved 5') && tr.textContent.includes('approved by lead'))",
            request_id), 30, "the approved write in the writes panel")
        assert visible(fresh_moto, dlq) == dlq_before - 5  # nothing ran twice


def test_the_panels_show_what_happened_before_the_page_opened_and_follow_the_feed(browser, fresh_moto,
                                                                                   tmp_path):
    dlq = "order-cancellation-queue-dlq"
    with console_server(fresh_moto, tmp_path) as (base, runtime, keys):
        preview = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=2))
        done = anyio.run(lambda: mcp_call(base, keys["agent"], "redrive_dlq", queue=dlq, max_messages=2,
                                          dry_run=False, confirm=True, approval_token=preview["approval"]["token"]))
        assert done["moved"] == 2
        assert httpx.post(f"{base}/webhooks/alertmanager", headers=bearer(keys["alertmanager"]),
                          json=alert_payload()).status_code == 200
        send_hostile_dead_letters(fresh_moto, "order-queue-dlq", 3)

        _sign_in(browser, f"{base}/", keys["viewer"])
        writes = _wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#writes tbody tr')].map((tr) => tr.textContent)"), 30,
            "the writes panel")
        assert any("redrive_dlq" in w and "agent" in w and "moved 2" in w and "complete" in w for w in writes), writes
        groups = _wait(lambda: browser.execute_script(
            "const t = document.getElementById('groups'); return t.querySelector('table') ? t.textContent : ''"),
            60, "failure groups")
        assert "Rejected: <script>window.__pwned=" in groups and "stock service said <b>no</b>" in groups
        assert "ord-x-0" in groups and "order-queue-dlq: 31 message(s)" in groups
        alerts = _wait(lambda: browser.execute_script("return document.querySelector('#alerts table')?.textContent"),
                       30, "the alerts panel")
        assert HOSTILE_SUMMARY in alerts and "OrderProcessorErrors" in alerts and "firing" in alerts

        # The charts: an hour of metrics (6 services per chart) and of DLQ depth, drawn.
        points = _wait(lambda: browser.execute_script(
            "const c = [...document.querySelectorAll('#metric-charts .chart')];"
            "return c.length === 2 && c.every((x) => +x.dataset.points > 300)"
            " ? c.map((x) => +x.dataset.points) : null"),
            60, "two metric charts with points")
        assert all(p >= 6 * 55 for p in points)
        assert browser.execute_script(CHART_PIXELS, "metric-0", [9, 105, 218]) > 100  # the first line is drawn
        depth = _wait(lambda: browser.execute_script(
            "return +document.getElementById('depth-order-queue-dlq')?.dataset.points || 0"), 30, "the depth chart")
        assert depth >= 55 and browser.execute_script(CHART_PIXELS, "depth-order-queue-dlq", [207, 34, 46]) > 100

        # Then live, from /events: new dead letters grow the table, the chart and their group.
        _wait(lambda: "order-queue-dlq" in runtime.poller.seen, 30, "the poller's baseline")
        send_dead_letters(fresh_moto, "order-queue-dlq", 4)
        _wait(lambda: browser.execute_script(
            "const row = document.querySelector('tr[data-queue=\"order-queue-dlq\"]');"
            "return row && +row.cells[1].textContent + +row.cells[2].textContent === 35"), 30, "depth 35")
        _wait(lambda: "Inventory timed out" in browser.execute_script(
            "return document.getElementById('groups').textContent"), 30, "the new failure group")
        _wait(lambda: browser.execute_script(
            "const pts = +document.getElementById('depth-order-queue-dlq').dataset.points;"
            "return pts > arguments[0]", depth), 30, "a new point on the depth chart")

        # Outside text stayed text: nothing it carried became markup or ran.
        assert browser.execute_script(
            "return window.__pwned === undefined && !document.querySelector('img, b, script:not([src])')"
            " && document.scripts.length === 2")
        OUTPUT.mkdir(exist_ok=True)
        browser.save_screenshot(str(OUTPUT / "console.png"))
