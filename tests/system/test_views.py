"""The HTTP reads: GET /api/tasks/<id>/ and /tasks/<id>/, for the owner or a token holder only."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from progress import report_error, report_progress, start_task, watch_token
from progress.models import Task
from progress.schemas import SnapshotMessage, TaskStatus
from progress.views import NOT_FOUND_BODY
from tests.conftest import csrf_client, session_owner

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def status(client: Client, task_id: str, token: str | None = None):
    query = "" if token is None else f"?token={token}"
    return client.get(f"/api/tasks/{task_id}/{query}")


def test_views_snapshot_validates(client):
    report_progress("job1", "queued", 0)
    report_progress("job1", "transcribing", 30, "chunk 3")
    response = status(client, "job1", watch_token("job1"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    snapshot = SnapshotMessage.model_validate_json(response.content)
    assert (snapshot.task_id, snapshot.seq, snapshot.status) == ("job1", 2, TaskStatus.RUNNING)
    assert (snapshot.stage, snapshot.percentage, snapshot.message) == (
        "transcribing",
        30,
        "chunk 3",
    )
    assert [h.stage for h in snapshot.history] == ["queued", "transcribing"]


def test_views_snapshot_without_trailing_slash(client):
    report_progress("job1", "queued", 0)
    assert client.get(f"/api/tasks/job1?token={watch_token('job1')}").status_code == 200


def test_views_failed_task_has_error(client):
    report_progress("job1", "transcribing", 10)
    report_error("job1", "decode_failed", "We could not read the audio.")
    snapshot = SnapshotMessage.model_validate_json(status(client, "job1", watch_token("job1")).content)
    assert snapshot.status is TaskStatus.FAILED
    assert snapshot.error is not None
    assert snapshot.error.error_code == "decode_failed"


def test_views_refusals_are_byte_identical(client, settings):
    report_progress("job1", "queued", 0)
    report_progress("job2", "queued", 0)
    good = watch_token("job1")
    settings.PROGRESS = {**settings.PROGRESS, "WATCH_TOKEN_MAX_AGE": 1}
    expired = watch_token("job1")
    time.sleep(2.1)
    refusals = [
        status(client, "job1"),  # no token, not the owner
        status(client, "job1", good[:-2] + ("AA" if not good.endswith("AA") else "BB")),  # tampered
        status(client, "job1", expired),
        status(client, "job1", watch_token("job2")),  # another task's
        status(client, "job1", "x" * 500),
        status(client, "nobody", watch_token("nobody")),  # a valid token for a task that does not exist
        status(client, "nobody"),
        client.get("/api/tasks/bad%20id/"),
        client.get(f"/api/tasks/{'a' * 65}/"),
    ]
    assert {(r.status_code, r.content) for r in refusals} == {(404, NOT_FOUND_BODY)}


def test_views_owner_reads_without_token(client):
    task_id = start_task("queued", owner=session_owner(client))
    assert status(client, task_id).status_code == 200
    assert status(Client(), task_id).content == NOT_FOUND_BODY


def test_views_task_page_needs_owner_or_token(client):
    report_progress("job1", "queued", 0)
    assert client.get("/tasks/job1/").status_code == 404
    assert client.get("/tasks/nobody/").content == client.get("/tasks/job1/").content
    page = client.get(f"/tasks/job1/?token={watch_token('job1')}")
    assert page.status_code == 200
    assert page["Referrer-Policy"] == "no-referrer"
    assert watch_token("job1")[:10] in page.content.decode()


def test_views_post_not_allowed(client):
    report_progress("job1", "queued", 0)
    assert client.post(f"/api/tasks/job1/?token={watch_token('job1')}").status_code == 405


def test_views_owner_cancels_a_running_task():
    owner = csrf_client()
    task_id = start_task("transcribing", owner=session_owner(owner))
    response = owner.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["task_id"]) == ("cancelled", task_id)
    again = owner.post(f"/api/tasks/{task_id}/cancel")
    assert (again.status_code, again.json()["error"]) == (409, "not_running")


def test_views_owner_deletes_a_task_and_it_is_gone():
    owner = csrf_client()
    task_id = start_task("transcribing", owner=session_owner(owner))
    token = watch_token(task_id)
    assert owner.delete(f"/api/tasks/{task_id}/").status_code == 204
    for path in [f"/api/tasks/{task_id}/", f"/api/tasks/{task_id}/?token={token}"]:
        response = owner.get(path)
        assert (response.status_code, response.content) == (404, NOT_FOUND_BODY)
    assert owner.get(f"/tasks/{task_id}/?token={token}").status_code == 404
    assert not Task.objects.filter(pk=task_id).exists()


def test_views_cancel_and_delete_refuse_everyone_but_the_owner_alike():
    owner = csrf_client()
    task_id = start_task("transcribing", owner=session_owner(owner))
    token = watch_token(task_id)
    stranger = csrf_client()
    session_owner(stranger)  # a session of its own, with tasks of its own maybe
    attempts = [
        stranger.post(f"/api/tasks/{task_id}/cancel"),
        stranger.post(f"/api/tasks/{task_id}/cancel?token={token}"),
        stranger.delete(f"/api/tasks/{task_id}/"),
        stranger.delete(f"/api/tasks/{task_id}/?token={token}"),
        csrf_client().delete(f"/api/tasks/{task_id}/?token={token}"),
        stranger.post("/api/tasks/no-such-task/cancel"),
        stranger.delete("/api/tasks/no-such-task/"),
    ]
    assert {(r.status_code, r.content) for r in attempts} == {(404, NOT_FOUND_BODY)}
    assert Task.objects.get(pk=task_id).status == "running"


def test_views_cancel_and_delete_need_the_csrf_token():
    owner = csrf_client()
    task_id = start_task("transcribing", owner=session_owner(owner))
    del owner.defaults["HTTP_X_CSRFTOKEN"]
    for response in (owner.post(f"/api/tasks/{task_id}/cancel"), owner.delete(f"/api/tasks/{task_id}/")):
        assert (response.status_code, response.json()["error"]) == (403, "csrf_failed")
    assert Task.objects.get(pk=task_id).status == "running"
