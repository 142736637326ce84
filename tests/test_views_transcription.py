"""The transcription HTTP API: upload checks (nothing left on disk), result, retry, CSRF."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from progress import report_error, report_progress
from progress.models import Task
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


@pytest.fixture
def client() -> Client:
    """A client that must do the CSRF dance, as a script would."""
    client = Client(enforce_csrf_checks=True)
    token = client.get("/api/csrf/").json()["csrf_token"]
    client.defaults["HTTP_X_CSRFTOKEN"] = token
    return client


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def upload(client: Client, name: str, content: bytes, query: str = ""):
    return client.post(f"/api/tasks/{query}", {"file": SimpleUploadedFile(name, content)})


def wait_done(task_id: str) -> Task:
    deadline = time.monotonic() + 120
    while (task := Task.objects.get(pk=task_id)).status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    return task


def test_views_upload_queues_and_the_result_has_the_words(client, media, tmp_path):
    speech = make_speech_wav(tmp_path / "audio")
    response = upload(client, "speech.wav", speech.read_bytes())
    assert response.status_code == 201
    body = response.json()
    task_id = body["task_id"]
    assert body["ws_url"] == f"ws://testserver/ws/tasks/{task_id}/"
    assert (body["status_url"], body["result_url"]) == (
        f"/api/tasks/{task_id}/",
        f"/api/tasks/{task_id}/result",
    )
    assert wait_done(task_id).status == "complete"
    result = client.get(body["result_url"])
    assert result.status_code == 200
    assert fraction_recognised(spoken_text(speech), result.json()["text"]) >= 0.6
    assert files_under(media) == []


def test_views_upload_with_a_chosen_task_id(client, media, tmp_path):
    response = upload(client, "a.wav", make_speech_wav(tmp_path / "audio").read_bytes(), "?task_id=mine-1")
    assert response.status_code == 201
    assert response.json()["task_id"] == "mine-1"
    assert Transcription.objects.filter(pk="mine-1").exists()
    assert wait_done("mine-1").status == "complete"  # the pool's job ends inside this test


def test_views_upload_bad_task_id_is_400(client, media):
    response = upload(client, "a.wav", b"RIFF0000WAVE", "?task_id=no%20spaces")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_task_id")


def test_views_upload_existing_task_id_is_409(client, media, tmp_path):
    report_progress("taken", "queued", 0)
    response = upload(client, "a.wav", make_speech_wav(tmp_path / "audio").read_bytes(), "?task_id=taken")
    assert (response.status_code, response.json()["error"]) == (409, "task_exists")
    assert files_under(media) == []


def test_views_upload_not_audio_is_415_and_leaves_nothing(client, media):
    response = upload(client, "notes.wav", b"this is plain text, not audio\n" * 100)
    assert (response.status_code, response.json()["error"]) == (415, "not_audio")
    assert "detail" in response.json()
    assert files_under(media) == []
    assert not Task.objects.exists()


def test_views_upload_empty_is_400_and_leaves_nothing(client, media):
    response = upload(client, "empty.wav", b"")
    assert (response.status_code, response.json()["error"]) == (400, "empty_file")
    assert files_under(media) == []


def test_views_upload_oversize_is_413_and_leaves_nothing(client, media, settings):
    settings.PROGRESS = {"MAX_UPDATES_PER_SECOND": 0, "MAX_UPLOAD_BYTES": 1000}
    response = upload(client, "big.wav", b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 5000)
    assert (response.status_code, response.json()["error"]) == (413, "file_too_large")
    assert files_under(media) == []


def test_views_upload_rejected_with_chosen_id_fails_that_task(client, media):
    response = upload(client, "notes.txt", b"hello", "?task_id=watched")
    assert response.status_code == 415
    task = Task.objects.get(pk="watched")
    assert (task.status, task.error_code) == ("failed", "upload_rejected")


def test_views_upload_without_file_field_is_400(client, media):
    response = client.post("/api/tasks/", {"other": "x"})
    assert (response.status_code, response.json()["error"]) == (400, "no_file")


def test_views_upload_without_csrf_token_is_403(media):
    response = Client(enforce_csrf_checks=True).post(
        "/api/tasks/", {"file": SimpleUploadedFile("a.wav", b"x")}
    )
    assert (response.status_code, response.json()["error"]) == (403, "csrf_failed")
    assert files_under(media) == []


def test_views_upload_get_is_405(client, media):
    assert client.get("/api/tasks/").status_code == 405


def test_views_csrf_endpoint_sets_the_cookie():
    client = Client()
    response = client.get("/api/csrf/")
    assert response.json()["csrf_token"]
    assert "csrftoken" in response.cookies


def test_views_result_unknown_is_404(client):
    response = client.get("/api/tasks/nobody/result")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_task")


def test_views_result_bad_id_is_400(client):
    assert client.get("/api/tasks/bad%21id/result").status_code == 400


def test_views_result_while_running_is_409(client):
    report_progress("job1", "transcribing", 40)
    response = client.get("/api/tasks/job1/result")
    assert (response.status_code, response.json()["status"]) == (409, "running")


def test_views_retry_of_a_running_task_is_409(client):
    report_progress("job1", "queued", 0)
    response = client.post("/api/tasks/job1/retry")
    assert (response.status_code, response.json()["error"]) == (409, "not_failed")


def test_views_retry_unknown_is_404(client):
    assert client.post("/api/tasks/nobody/retry").status_code == 404


def test_views_retry_without_audio_is_409(client):
    report_error("job1", "boom", "It broke.")
    response = client.post("/api/tasks/job1/retry")
    assert (response.status_code, response.json()["error"]) == (409, "nothing_to_retry")


def test_views_retry_of_a_failed_task_runs_a_new_attempt(client, media, tmp_path):
    target = media / "uploads" / "job1.wav"
    target.parent.mkdir(parents=True)
    target.write_bytes(make_speech_wav(tmp_path / "audio").read_bytes())
    Transcription.objects.create(task_id="job1", audio_path="uploads/job1.wav")
    report_progress("job1", "queued", 0)
    report_error("job1", "worker_lost", "Gone.")
    response = client.post("/api/tasks/job1/retry")
    assert response.status_code == 202
    assert response.json()["attempt"] == 2
    task = wait_done("job1")
    assert (task.status, task.attempt) == ("complete", 2)
    assert client.get("/api/tasks/job1/result").status_code == 200


def test_views_upload_malformed_multipart_is_400_json(client, media):
    response = client.post("/api/tasks/", b"garbage", content_type="multipart/form-data")
    assert (response.status_code, response.json()["error"]) == (400, "bad_multipart")
    assert files_under(media) == []
