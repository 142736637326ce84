"""The upload page: a CSRF cookie, and in Chromium an upload watched live to its transcript."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client
from playwright.sync_api import Browser

from tests import processes
from tests.browser import chromium
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text


@pytest.mark.django_db
def test_index_page_serves_form_and_csrf_cookie():
    response = Client().get("/")
    assert response.status_code == 200
    assert b'<form id="upload">' in response.content
    assert b"progress/client.js" in response.content
    assert b'type="file"' in response.content
    assert b"multiple" in response.content
    assert "csrftoken" in response.cookies


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.mark.e2e
@pytest.mark.slow
def test_index_page_upload_watch_and_transcript_on_embedded_default(tmp_path: Path, browser: Browser):
    audio = make_speech_wav(tmp_path / "audio")
    env = processes.project_env(tmp_path / "data")
    processes.migrate(env)
    with processes.runserver(env, tmp_path / "runserver.log") as server:
        page = browser.new_page()
        page.goto(server.url("/"))
        page.set_input_files("#files", str(audio))
        page.wait_for_selector(".row[data-transcript=loaded] .transcript li", timeout=120_000)
        status = page.get_attribute(".row", "data-status")
        transcript = page.inner_text(".row .transcript")
    assert status == "complete"
    assert "SPEAKER_1" not in transcript  # one voice: no label on every line
    assert fraction_recognised(spoken_text(audio), transcript) >= 0.6
