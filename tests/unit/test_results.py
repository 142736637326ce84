"""Transcript downloads over HTTP: four formats, file names, and the same refusals as every read."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from progress import report_error, report_progress, start_task, watch_token
from progress.views import NOT_FOUND_BODY
from tests.unit.test_formats import RESULT
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def owned_task(client: Client, *, name: str = "Board meeting.wav", complete: bool = True) -> str:
    """A task of ``client``'s session, with its transcript stored (and completed, unless told)."""
    task_id: str = client.post("/api/tasks/reserve").json()["task_id"]
    Transcription.objects.create(task_id=task_id, original_name=name, result=RESULT if complete else None)
    report_progress(task_id, "queued", 0)
    if complete:
        report_progress(task_id, "complete", 100)
    return task_id


@pytest.mark.parametrize(
    ("fmt", "content_type", "first_line"),
    [
        ("srt", "application/x-subrip; charset=utf-8", "1"),
        ("vtt", "text/vtt; charset=utf-8", "WEBVTT"),
        ("txt", "text/plain; charset=utf-8", "[00:00:00] SPEAKER_1: hello there"),
        ("json", "application/json; charset=utf-8", "{"),
    ],
)
def test_results_download_each_format_named_after_the_upload(fmt, content_type, first_line):
    client = Client()
    task_id = owned_task(client)
    response = client.get(f"/api/tasks/{task_id}/result.{fmt}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="Board meeting.{fmt}"'
    assert response["Cache-Control"] == "no-store"
    assert response.content.decode().splitlines()[0] == first_line


def test_results_format_query_equals_the_suffix():
    client = Client()
    task_id = owned_task(client)
    by_query = client.get(f"/api/tasks/{task_id}/result?format=vtt")
    assert by_query.content == client.get(f"/api/tasks/{task_id}/result.vtt").content


def test_results_plain_result_stays_json_for_scripts():
    client = Client()
    task_id = owned_task(client)
    response = client.get(f"/api/tasks/{task_id}/result")
    assert response.json() == RESULT
    assert "Content-Disposition" not in response


def test_results_json_download_parses_to_the_transcript():
    client = Client()
    task_id = owned_task(client)
    assert json.loads(client.get(f"/api/tasks/{task_id}/result.json").content) == RESULT


def test_results_non_ascii_name_is_encoded():
    client = Client()
    task_id = owned_task(client, name="Réunion été.mp3")
    disposition = client.get(f"/api/tasks/{task_id}/result.srt")["Content-Disposition"]
    assert disposition == "attachment; filename*=utf-8''R%C3%A9union%20%C3%A9t%C3%A9.srt"


def test_results_unknown_format_is_400():
    client = Client()
    task_id = owned_task(client)
    for path in (f"/api/tasks/{task_id}/result.exe", f"/api/tasks/{task_id}/result?format=../x"):
        response = client.get(path)
        assert response.status_code == 400
        assert response.json()["error"] == "bad_format"


def test_results_download_before_completion_is_409():
    client = Client()
    task_id = owned_task(client, complete=False)
    response = client.get(f"/api/tasks/{task_id}/result.srt")
    assert (response.status_code, response.json()["error"]) == (409, "not_complete")


def test_results_failed_task_is_409():
    client = Client()
    task_id = owned_task(client, complete=False)
    report_error(task_id, "worker_lost", "The worker stopped.")
    assert client.get(f"/api/tasks/{task_id}/result.txt").status_code == 409


def test_results_token_holder_may_download():
    task_id = owned_task(Client())
    response = Client().get(f"/api/tasks/{task_id}/result.vtt?token={watch_token(task_id)}")
    assert response.status_code == 200


def test_results_stranger_gets_the_one_404():
    task_id = owned_task(Client())
    other = start_task("queued")
    for path in (
        f"/api/tasks/{task_id}/result.srt",
        f"/api/tasks/{task_id}/result.srt?token={watch_token(other)}",
        f"/api/tasks/{task_id}/result.srt?token=forged",
        "/api/tasks/no-such-task/result.srt",
        "/api/tasks/bad%21id/result.vtt",
    ):
        response = Client().get(path)
        assert (response.status_code, response.content) == (404, NOT_FOUND_BODY), path
