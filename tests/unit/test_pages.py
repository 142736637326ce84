"""The pages: the session's list, one transcription's page, and their static files (hashed once collected)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from progress import report_error, watch_token
from tests.unit.test_results import owned_task

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def page_options(html: bytes) -> dict[str, Any]:
    found = re.search(rb'<script id="page-options" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None
    options: dict[str, Any] = json.loads(found.group(1))
    return options


def test_pages_list_shows_the_sessions_tasks_newest_first():
    client = Client()
    first = owned_task(client, name="one.wav")
    second = owned_task(client, name="two.wav", complete=False)
    report_error(second, "worker_lost", "The worker stopped.")
    tasks = client.get("/api/transcriptions/").json()["tasks"]
    assert [(t["task_id"], t["name"], t["status"]) for t in tasks] == [
        (second, "two.wav", "failed"),
        (first, "one.wav", "complete"),
    ]
    assert tasks[1]["share_url"] == f"/transcriptions/{first}/?token={watch_token(first)}"
    assert all(t["owned"] for t in tasks)


def test_pages_list_is_empty_for_another_session_and_for_no_session():
    owned_task(Client())
    other = Client()
    other.get("/")
    assert other.get("/api/transcriptions/").json() == {"tasks": []}
    assert Client().get("/api/transcriptions/").json() == {"tasks": []}


def test_pages_list_ignores_a_token_in_the_query():
    task_id = owned_task(Client())
    response = Client().get(f"/api/transcriptions/?token={watch_token(task_id)}")
    assert response.json() == {"tasks": []}


def test_pages_task_page_for_the_owner_may_retry():
    client = Client()
    task_id = owned_task(client, name="Board meeting.wav")
    response = client.get(f"/transcriptions/{task_id}/")
    assert response.status_code == 200
    assert b"<h1>Board meeting.wav</h1>" in response.content
    options = page_options(response.content)
    assert (options["mode"], options["task"]["task_id"], options["task"]["owned"]) == ("task", task_id, True)
    assert response["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_pages_task_page_for_a_token_holder_may_not_retry():
    task_id = owned_task(Client())
    response = Client().get(f"/transcriptions/{task_id}/?token={watch_token(task_id)}")
    assert response.status_code == 200
    assert page_options(response.content)["task"]["owned"] is False


def test_pages_task_page_refuses_strangers_alike():
    task_id = owned_task(Client())
    bodies = set()
    for path in (
        f"/transcriptions/{task_id}/",
        f"/transcriptions/{task_id}/?token=forged",
        "/transcriptions/no-such-task/",
        "/transcriptions/bad%21id/",
    ):
        response = Client().get(path)
        assert response.status_code == 404, path
        bodies.add(response.content)
    assert len(bodies) == 1


def test_pages_name_is_escaped():
    client = Client()
    task_id = owned_task(client, name="<script>alert(1)</script>.wav")
    html = client.get(f"/transcriptions/{task_id}/").content
    assert b"<script>alert(1)" not in html
    assert page_options(html)["task"]["name"] == "<script>alert(1)</script>.wav"


def test_pages_scripts_are_separate_static_files():
    response = Client().get("/")
    html = response.content
    assert "script-src" not in response["Content-Security-Policy"]  # default-src 'self' covers scripts
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert b"<script>" not in html  # no inline script: the page's own is a static file
    for name in (b"progress/client.js", b"transcription/rows.js", b"transcription/page.js"):
        assert name in html


def test_pages_collectstatic_gives_hashed_names_that_are_served(settings, tmp_path: Path):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)
    settings.STATIC_ROOT = tmp_path / "static"  # a settings change resets the storage: it reads the manifest
    html = Client().get("/").content.decode()
    hashed = re.search(r'src="/static/(transcription/page\.[0-9a-f]{12}\.js)"', html)
    assert hashed is not None, html
    assert (tmp_path / "static" / (hashed.group(1) + ".gz")).exists()
    response = Client().get("/static/" + hashed.group(1))
    assert response.status_code == 200
    assert "max-age=315360000" in response["Cache-Control"]
    assert b"TranscriptionRow" in response.getvalue()
