"""The transcription HTTP API: upload checks (nothing left on disk), result, retry, CSRF."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from progress import report_error, report_progress, restart_task, start_task, watch_token
from progress.models import Task
from progress.views import NOT_FOUND_BODY
from tests.conftest import csrf_client, session_owner
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


@pytest.fixture
def client() -> Client:
    """A client that must do the CSRF dance, as a script would."""
    return csrf_client()


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
    query = f"?token={body['watch_token']}"
    assert body["ws_url"] == f"ws://testserver/ws/tasks/{task_id}/{query}"
    assert (body["status_url"], body["result_url"]) == (
        f"/api/tasks/{task_id}/{query}",
        f"/api/tasks/{task_id}/result{query}",
    )
    assert wait_done(task_id).status == "complete"
    result = client.get(body["result_url"])
    assert result.status_code == 200
    assert fraction_recognised(spoken_text(speech), result.json()["text"]) >= 0.6
    assert files_under(media) == []


def reserve(client: Client) -> dict[str, Any]:
    response = client.post("/api/tasks/reserve")
    assert response.status_code == 201
    links: dict[str, Any] = response.json()
    return links


def test_views_upload_into_a_reserved_task(client, media, tmp_path):
    links = reserve(client)
    task_id = links["task_id"]
    assert Task.objects.get(pk=task_id).stage == "uploading"
    assert links["upload_url"] == f"/api/tasks/{task_id}/upload"
    response = client.post(links["upload_url"], {"file": SimpleUploadedFile("a.wav", speech_bytes(tmp_path))})
    assert response.status_code == 201
    assert response.json()["task_id"] == task_id
    assert Transcription.objects.filter(pk=task_id).exists()
    assert wait_done(task_id).status == "complete"  # the pool's job ends inside this test


def test_views_upload_chosen_task_id_is_refused(client, media):
    response = upload(client, "a.wav", b"RIFF0000WAVE", "?task_id=mine-1")
    assert (response.status_code, response.json()["error"]) == (400, "task_id_not_allowed")
    assert not Task.objects.exists()


def test_views_upload_ids_are_server_minted_and_distinct(client, media, tmp_path):
    ids = {upload(client, "a.wav", speech_bytes(tmp_path)).json()["task_id"] for _ in range(3)}
    ids |= {reserve(client)["task_id"] for _ in range(3)}
    assert len(ids) == 6
    assert all(len(i) == 32 for i in ids)
    for task_id in ids:
        wait_done_or_uploading(task_id)


def test_views_upload_into_anothers_reservation_is_404(client, media, tmp_path):
    links = reserve(client)
    thief = csrf_client()
    response = thief.post(links["upload_url"], {"file": SimpleUploadedFile("a.wav", speech_bytes(tmp_path))})
    assert (response.status_code, response.content) == (404, NOT_FOUND_BODY)
    assert Task.objects.get(pk=links["task_id"]).stage == "uploading"
    assert files_under(media) == []


def test_views_upload_twice_into_one_reservation_is_409(client, media, tmp_path):
    links = reserve(client)
    first = client.post(links["upload_url"], {"file": SimpleUploadedFile("a.wav", speech_bytes(tmp_path))})
    again = client.post(links["upload_url"], {"file": SimpleUploadedFile("b.wav", speech_bytes(tmp_path))})
    assert (first.status_code, again.status_code, again.json()["error"]) == (201, 409, "already_uploaded")
    wait_done(links["task_id"])


def test_views_reservations_per_owner_are_limited(client, media):
    from transcription.views import MAX_RESERVATIONS

    for _ in range(MAX_RESERVATIONS):
        reserve(client)
    response = client.post("/api/tasks/reserve")
    assert (response.status_code, response.json()["error"]) == (429, "too_many_reservations")
    assert csrf_client().post("/api/tasks/reserve").status_code == 201  # another session is not held up


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
    settings.TRANSCRIPTION_MAX_UPLOAD_BYTES = 1000
    response = upload(client, "big.wav", b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 5000)
    assert (response.status_code, response.json()["error"]) == (413, "file_too_large")
    assert files_under(media) == []


def test_views_upload_rejected_fails_the_reserved_task(client, media):
    links = reserve(client)
    response = client.post(links["upload_url"], {"file": SimpleUploadedFile("notes.txt", b"hello")})
    assert response.status_code == 415
    task = Task.objects.get(pk=links["task_id"])
    assert (task.status, task.error_code) == ("failed", "upload_rejected")


def test_views_upload_too_long_audio_is_413_before_any_job(client, media, settings, tmp_path):
    settings.TRANSCRIPTION_MAX_AUDIO_SECONDS = 1
    response = upload(client, "long.wav", speech_bytes(tmp_path))
    assert (response.status_code, response.json()["error"]) == (413, "audio_too_long")
    assert not Task.objects.exists()
    assert files_under(media) == []


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


def test_views_result_refusals_are_the_one_404(client):
    report_progress("job1", "complete", 100)
    for path in ["/api/tasks/nobody/result", "/api/tasks/bad%21id/result", "/api/tasks/job1/result"]:
        response = client.get(path)
        assert (response.status_code, response.content) == (404, NOT_FOUND_BODY)


def test_views_result_while_running_is_409(client):
    report_progress("job1", "transcribing", 40)
    response = client.get(f"/api/tasks/job1/result?token={watch_token('job1')}")
    assert (response.status_code, response.json()["status"]) == (409, "running")


def test_views_retry_of_a_running_task_is_409(client):
    task_id = owned(client, "queued")
    response = client.post(f"/api/tasks/{task_id}/retry")
    assert (response.status_code, response.json()["error"]) == (409, "not_failed")


def test_views_retry_needs_the_owner_not_a_token(client):
    task_id = owned(client, "queued")
    report_error(task_id, "boom", "It broke.")
    stranger = csrf_client()
    for path in [f"/api/tasks/{task_id}/retry", f"/api/tasks/{task_id}/retry?token={watch_token(task_id)}"]:
        response = stranger.post(path)
        assert (response.status_code, response.content) == (404, NOT_FOUND_BODY)
    assert stranger.post("/api/tasks/nobody/retry").content == NOT_FOUND_BODY
    assert Task.objects.get(pk=task_id).attempt == 1


def test_views_retry_without_audio_is_409(client):
    task_id = owned(client, "queued")
    report_error(task_id, "boom", "It broke.")
    response = client.post(f"/api/tasks/{task_id}/retry")
    assert (response.status_code, response.json()["error"]) == (409, "nothing_to_retry")


def test_views_retry_of_a_failed_task_runs_a_new_attempt(client, media, tmp_path):
    task_id = owned(client, "queued")
    target = media / "uploads" / f"{task_id}.wav"
    target.parent.mkdir(parents=True)
    target.write_bytes(speech_bytes(tmp_path))
    Transcription.objects.create(task_id=task_id, audio_path=f"uploads/{task_id}.wav")
    report_error(task_id, "worker_lost", "Gone.")
    response = client.post(f"/api/tasks/{task_id}/retry")
    assert response.status_code == 202
    assert response.json()["attempt"] == 2
    task = wait_done(task_id)
    assert (task.status, task.attempt) == ("complete", 2)
    assert client.get(f"/api/tasks/{task_id}/result").status_code == 200


def test_views_retries_are_limited(client, media, settings, tmp_path):
    settings.TRANSCRIPTION_MAX_ATTEMPTS = 2
    task_id = owned(client, "queued")
    Transcription.objects.create(task_id=task_id, audio_path=f"uploads/{task_id}.wav")
    report_error(task_id, "boom", "It broke.")
    restart_task(task_id)
    report_error(task_id, "boom", "It broke again.")
    response = client.post(f"/api/tasks/{task_id}/retry")
    assert (response.status_code, response.json()["error"]) == (409, "too_many_attempts")


def owned(client: Client, stage: str) -> str:
    """A task owned by ``client``'s session."""
    return start_task(stage, owner=session_owner(client))


def speech_bytes(tmp_path: Path) -> bytes:
    return make_speech_wav(tmp_path / "audio").read_bytes()


def wait_done_or_uploading(task_id: str) -> None:
    if Task.objects.get(pk=task_id).stage != "uploading":
        wait_done(task_id)


def test_views_upload_malformed_multipart_is_400_json(client, media):
    response = client.post("/api/tasks/", b"garbage", content_type="multipart/form-data")
    assert (response.status_code, response.json()["error"]) == (400, "bad_multipart")
    assert files_under(media) == []


def test_views_two_uploads_racing_into_one_reservation_one_wins(client, media, tmp_path):
    links = reserve(client)
    content = speech_bytes(tmp_path)
    statuses: list[int] = []

    def upload_as_owner() -> None:
        twin = Client(enforce_csrf_checks=True)
        twin.cookies = client.cookies  # the same session, from a second connection
        twin.defaults["HTTP_X_CSRFTOKEN"] = client.defaults["HTTP_X_CSRFTOKEN"]
        response = twin.post(links["upload_url"], {"file": SimpleUploadedFile("a.wav", content)})
        statuses.append(response.status_code)

    racers = [threading.Thread(target=upload_as_owner) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(statuses) == [201, 409]
    wait_done(links["task_id"])
    assert len(files_under(media / "uploads")) <= 1


def test_views_two_new_uploads_at_once_never_share_a_task(client, media, tmp_path):
    content = speech_bytes(tmp_path)
    made: list[str] = []

    def upload_new() -> None:
        made.append(upload(csrf_client(), "a.wav", content).json()["task_id"])

    racers = [threading.Thread(target=upload_new) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(set(made)) == 3
    owners = set(Task.objects.filter(pk__in=made).values_list("owner", flat=True))
    assert len(owners) == 3  # each belongs to the session that uploaded it
    for task_id in made:
        wait_done(task_id)


def test_views_upload_damaged_wav_is_415_before_any_task(client, media):
    response = upload(client, "broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(2000))
    assert (response.status_code, response.json()["error"]) == (415, "invalid_audio")
    assert not Task.objects.exists()


def test_views_a_logged_in_user_owns_across_sessions(media, tmp_path):
    from django.contrib.auth.models import User

    user = User.objects.create_user("ada", password="pw-for-tests-only")
    laptop, phone = csrf_client(), csrf_client()
    laptop.force_login(user)
    phone.force_login(user)
    task_id = reserve(laptop)["task_id"]
    assert Task.objects.get(pk=task_id).owner == f"user:{user.pk}"
    assert phone.get(f"/api/tasks/{task_id}/").status_code == 200  # another browser of the same user
    assert csrf_client().get(f"/api/tasks/{task_id}/").content == NOT_FOUND_BODY


def test_views_a_task_deleted_while_its_file_arrives_keeps_nothing(client, media, tmp_path, monkeypatch):
    from progress import delete_task
    from transcription import views

    links = reserve(client)
    stored_by_view = views._store

    def deleted_meanwhile(upload: Any, task_id: str) -> Path:
        delete_task(task_id)  # the owner's DELETE lands while the body is being stored
        return stored_by_view(upload, task_id)

    monkeypatch.setattr(views, "_store", deleted_meanwhile)
    response = client.post(links["upload_url"], {"file": SimpleUploadedFile("a.wav", speech_bytes(tmp_path))})
    assert response.status_code == 404
    assert not Transcription.objects.filter(pk=links["task_id"]).exists()
    assert not Task.objects.filter(pk=links["task_id"]).exists()
    assert files_under(media) == []
