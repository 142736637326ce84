"""The page's resumable uploads in headless Chromium against uvicorn: the server stops mid-upload,
the row pauses, the server comes back, the upload resumes by itself, and the transcript arrives."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import WAIT_MS, chromium
from tests.fixtures_audio import make_speech_wav
from tests.processes import free_port, migrate, project_env, serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB_MS = 180_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=WAIT_MS)
    with chromium() as launched:
        yield launched


def test_page_resume_upload_pauses_while_the_server_is_away_then_finishes(browser: Browser, tmp_path: Path):
    audio = make_speech_wav(tmp_path, seconds_min=40)
    env = project_env(tmp_path, TRANSCRIPTION_UPLOAD_CHUNK_BYTES=str(64 * 1024), TRANSCRIPTION_WORKERS="1")
    migrate(env)
    port = free_port()
    context = browser.new_context()
    page = context.new_page()
    # A slow uplink, so the upload is still going when the server stops.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 128 * 1024}
    cdp.send("Network.emulateNetworkConditions", conditions)
    try:
        with serving("uvicorn", env, tmp_path / "first.log", port=port) as server:
            page.goto(server.url("/"))
            page.set_input_files("#files", [str(audio)])
            mine = page.locator(".row", has=page.locator(".row-name", has_text=audio.name))
            expect(mine).to_have_attribute("data-bar", re.compile(r"^[1-9]"))  # some bytes have gone
            percent = int(mine.locator(".row-percent").inner_text().rstrip("%") or 0)
            assert percent < 90, "the upload finished before the server could be stopped"
            expect(mine.locator(".row-message")).to_contain_text("/s")  # speed, and time left
        expect(mine).to_have_attribute("data-upload", "paused")
        expect(mine.locator(".row-message")).to_have_text("Paused, resuming…")
        with serving("uvicorn", env, tmp_path / "second.log", port=port):
            expect(mine).to_have_attribute("data-upload", "sending", timeout=60_000)
            expect(mine).to_have_attribute("data-status", "complete", timeout=JOB_MS)
            expect(mine.locator(".transcript li").first).to_be_visible()
    finally:
        context.close()


def test_page_resume_upload_goes_on_by_itself_after_a_reload(browser: Browser, tmp_path: Path):
    audio = make_speech_wav(tmp_path, seconds_min=40)
    env = project_env(tmp_path, TRANSCRIPTION_UPLOAD_CHUNK_BYTES=str(64 * 1024), TRANSCRIPTION_WORKERS="1")
    migrate(env)
    context = browser.new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 128 * 1024}
    cdp.send("Network.emulateNetworkConditions", conditions)
    try:
        with serving("uvicorn", env, tmp_path / "server.log") as server:
            page.goto(server.url("/"))
            page.set_input_files("#files", [str(audio)])
            mine = page.locator(".row", has=page.locator(".row-name", has_text=audio.name))
            expect(mine).to_have_attribute("data-bar", re.compile(r"^[1-9]"))
            page.reload()  # the file is not chosen again: the page kept it
            expect(mine).to_have_count(1)
            expect(mine).to_have_attribute("data-upload", "sending")
            expect(mine).to_have_attribute("data-status", "complete", timeout=JOB_MS)
            page.reload()  # sent: nothing is sent again, the list shows it done
            expect(mine).to_have_count(1)
            expect(mine).to_have_attribute("data-status", "complete")
            uploads = [f for f in (tmp_path / "media" / "uploads").rglob("*") if f.is_file()]
            assert len(uploads) <= 1  # one stored file at most (none once its transcript is kept)
    finally:
        context.close()
