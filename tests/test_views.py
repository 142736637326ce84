"""The HTTP fallback: GET /api/tasks/<id>/ serves the same snapshot the WebSocket sends first."""

from __future__ import annotations

import pytest

from progress import report_error, report_progress
from progress.schemas import ProgressStage, SnapshotMessage, TaskStatus

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def test_views_snapshot_validates(client):
    report_progress("job1", "queued", 0)
    report_progress("job1", "transcribing", 30, "chunk 3")
    response = client.get("/api/tasks/job1/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    snapshot = SnapshotMessage.model_validate_json(response.content)
    assert (snapshot.task_id, snapshot.seq, snapshot.status) == ("job1", 2, TaskStatus.RUNNING)
    assert (snapshot.stage, snapshot.percentage, snapshot.message) == (
        ProgressStage.TRANSCRIBING,
        30,
        "chunk 3",
    )
    assert [h.stage for h in snapshot.history] == [ProgressStage.QUEUED, ProgressStage.TRANSCRIBING]


def test_views_snapshot_without_trailing_slash(client):
    report_progress("job1", "queued", 0)
    assert client.get("/api/tasks/job1").status_code == 200


def test_views_failed_task_has_error(client):
    report_progress("job1", "transcribing", 10)
    report_error("job1", "decode_failed", "We could not read the audio.")
    snapshot = SnapshotMessage.model_validate_json(client.get("/api/tasks/job1/").content)
    assert snapshot.status is TaskStatus.FAILED
    assert snapshot.error is not None
    assert snapshot.error.error_code == "decode_failed"


def test_views_unknown_task_is_404(client):
    response = client.get("/api/tasks/nobody/")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_task"


@pytest.mark.parametrize("task_id", ["bad%20id", "a" * 65, "x.y"])
def test_views_invalid_task_id_is_400(client, task_id):
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_task_id"


def test_views_post_not_allowed(client):
    report_progress("job1", "queued", 0)
    assert client.post("/api/tasks/job1/").status_code == 405
