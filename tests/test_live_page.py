"""The live page at ``/`` in real headless Chromium (Debian's chromium + chromium-driver):
the token is entered once, the queue table fills from /events, and dead letters added through
boto3 show up as the new DLQ depth within seconds. The screenshot lands in
``test-output/live-page.png`` at the repository root."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import CHROMIUM, DRIVER, make_settings, send_dead_letters, serve_app

OUTPUT = Path(__file__).resolve().parents[1] / "test-output"

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run installs them)")


def _cells(driver, queue: str) -> list[str] | None:
    """The texts of ``queue``'s row, read in one script run (the page redraws the whole table
    on every event, so element handles found one call earlier may already be stale)."""
    return driver.execute_script(
        "const row = document.querySelector(`tr[data-queue=\"${arguments[0]}\"]`);"
        "return row ? [...row.querySelectorAll('td')].map((td) => td.textContent) : null;", queue)


def _cell(driver, queue: str, column: int) -> str | None:
    cells = _cells(driver, queue)
    return cells[column] if cells and column < len(cells) else None


def _depth(driver, queue: str) -> int | None:
    """Visible + in flight as the page shows them (the poller's own sampling, or any other
    reader, moves dead letters between the two columns for a moment; the sum is the depth)."""
    cells = _cells(driver, queue)
    if not cells or not (cells[1].isdigit() and cells[2].isdigit()):
        return None
    return int(cells[1]) + int(cells[2])


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"the page did not show {what} within {timeout:.0f} s"
        time.sleep(0.1)


def test_live_page_shows_new_dlq_depth(browser, fresh_moto, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    settings = make_settings(fresh_moto, tmp_path, events_poll_seconds=0.5, toolsets=["queues"],
                             http_token="page-test-token")
    seed_aws(settings, build_scenario(), metrics=False)
    with serve_app(settings) as (base, runtime):
        browser.get(f"{base}/")
        _wait(lambda: browser.find_element(By.ID, "auth").is_displayed(), 15, "the token form")
        browser.find_element(By.ID, "token").send_keys("page-test-token")
        browser.find_element(By.CSS_SELECTOR, "#auth button").click()
        _wait(lambda: _depth(browser, "order-queue-dlq") is not None, 20, "the order-queue-dlq row")
        assert browser.execute_script("return sessionStorage.getItem('opsmcp_token')") == "page-test-token"
        before = _depth(browser, "order-queue-dlq")
        assert before, "the seeded DLQ should hold dead letters"
        _wait(lambda: "order-queue-dlq" in runtime.poller.seen, 15, "the poller's baseline")
        send_dead_letters(fresh_moto, "order-queue-dlq", 4)
        _wait(lambda: _depth(browser, "order-queue-dlq") == before + 4, 15, f"depth {before + 4}")
        _wait(lambda: _cell(browser, "order-queue", 5) == str(before + 4), 15, "the source queue's DLQ depth")
        _wait(lambda: "Inventory timed out" in browser.find_element(By.ID, "groups").text, 15, "the new failure group")
        assert browser.find_element(By.ID, "status").text == "live"
        OUTPUT.mkdir(exist_ok=True)
        shot = OUTPUT / "live-page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
