"""The transcription page's rows (transcription/static/transcription/rows.js) follow the declared stages.

In headless Chromium, with the page's own row template and options and a stand-in for TaskProgress.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import Browser, Page

from tests.browser import chromium
from tests.processes import ROOT

pytestmark = [pytest.mark.e2e]

ROWS = ROOT / "transcription" / "static" / "transcription" / "rows.js"

SETUP = """(options) => {
  window.TaskProgress = function (id, handlers) { window.handlers = handlers; this.start = () => this; };
  const page = { options: options, announce: () => {}, connectionChanged: () => {} };
  window.row = new TranscriptionRow(page, document.getElementById("rows"), { name: "a.wav" });
  row.watch({ task_id: "t1", token: "tok", share_url: "http://127.0.0.1/t/t1", status: "running" });
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _index() -> tuple[str, dict[str, Any]]:
    """The index page's row template and options, as Django renders them."""
    html = Client().get("/").content.decode()
    template = re.search(r'<template id="row-template">.*?</template>', html, re.S)
    options = re.search(r'<script id="page-options" type="application/json">(.*?)</script>', html, re.S)
    assert template is not None
    assert options is not None
    return template.group(0), json.loads(options.group(1))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Playwright's sync API runs an event loop in this thread, where Django refuses database work.
    with ThreadPoolExecutor(1) as pool:
        template, options = pool.submit(_index).result()
    context = browser.new_context()
    opened = context.new_page()
    opened.set_content(f'{template}<ol id="rows"></ol>')
    opened.add_script_tag(path=str(ROWS))
    opened.evaluate(SETUP, options)
    try:
        yield opened
    finally:
        context.close()


def badge(page: Page) -> str:
    text: str = page.evaluate("row.q('.badge').textContent")
    return text


def test_rows_js_counts_the_declared_stages_from_the_page(page: Page):
    page.evaluate("row.show('transcribing', 50, null, 1)")
    assert badge(page) == "Transcribing · step 3 of 5"
    page.evaluate("row.show('diarizing', 0, null, 1)")
    assert badge(page) == "Finding speakers · step 5 of 5"


def test_rows_js_follows_the_stages_a_snapshot_declares(page: Page):
    snapshot = {
        "type": "snapshot",
        "seq": 2,
        "attempt": 1,
        "status": "running",
        "stage": "rendering",
        "percentage": 50,
        "history": [],
        "stages": ["fetching", "queued", "rendering", "complete"],
    }
    page.evaluate("(s) => handlers.snapshot(s)", snapshot)
    assert badge(page) == "Rendering · step 3 of 3"
    # Unknown stages share what the known ones leave: queued takes 2 of 100, the others 49 each.
    bar = float(page.evaluate("row.el.dataset.bar"))
    assert bar == pytest.approx(51 + 49 / 2, abs=0.1)
