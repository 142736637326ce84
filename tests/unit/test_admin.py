"""The admin for operators: tasks with status, stage, attempt and age, their events, retry; staff only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from progress import report_error, report_progress
from progress.models import Task
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("op", password="pw-for-tests-only"))
    return client


def test_admin_lists_tasks_with_status_stage_attempt_and_age(operator):
    report_progress("job1", "transcribing", 40)
    report_error("job2", "boom", "It broke.")
    page = operator.get("/admin/progress/task/").content.decode()
    assert "job1" in page
    assert "job2" in page
    assert "transcribing" in page
    assert "Age" in page or "age" in page
    failed_only = operator.get("/admin/progress/task/?status__exact=failed").content.decode()
    assert "job2" in failed_only
    assert "job1" not in failed_only


def test_admin_task_page_shows_its_events(operator):
    for stage in ("queued", "transcribing", "aligning"):
        report_progress("job1", stage, 0)
    page = operator.get("/admin/progress/task/job1/change/").content.decode()
    assert page.count("aligning") >= 2  # the stage, and its event inline


def test_admin_retry_action_starts_the_next_attempt(operator, media):
    report_progress("job1", "queued", 0)
    report_error("job1", "worker_lost", "Gone.")
    Transcription.objects.create(task_id="job1", audio_path="")  # no audio left: the attempt fails again
    response = operator.post(
        "/admin/progress/task/", {"action": "retry", "_selected_action": ["job1"]}, follow=True
    )
    assert response.status_code == 200
    task = Task.objects.get(pk="job1")
    assert task.attempt == 2
    assert (task.status, task.error_code) == ("failed", "nothing_to_retry")


def test_admin_is_refused_to_anyone_not_staff():
    report_progress("job1", "queued", 0)
    anonymous = Client().get("/admin/progress/task/")
    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    user = Client()
    user.force_login(User.objects.create_user("ada", password="pw-for-tests-only"))
    assert user.get("/admin/progress/task/").status_code == 302


def test_admin_cancel_action_cancels_running_tasks_only(operator):
    report_progress("job1", "transcribing", 40)
    report_progress("job2", "complete", 100)
    response = operator.post(
        "/admin/progress/task/", {"action": "cancel", "_selected_action": ["job1", "job2"]}, follow=True
    )
    assert "Cancelled 1 task(s); 1 had ended." in response.content.decode()
    assert Task.objects.get(pk="job1").status == "cancelled"
    assert Task.objects.get(pk="job2").status == "complete"


def test_admin_delete_action_deletes_the_task_and_its_transcript(operator, media):
    report_progress("job1", "complete", 100)
    audio = media / "uploads" / "job1.wav"
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"RIFF")
    Transcription.objects.create(task_id="job1", audio_path="uploads/job1.wav", result={"text": "secret"})
    response = operator.post(
        "/admin/progress/task/", {"action": "delete_everything", "_selected_action": ["job1"]}, follow=True
    )
    assert response.status_code == 200
    assert not Task.objects.filter(pk="job1").exists()
    assert not Transcription.objects.filter(pk="job1").exists()
    assert not audio.exists()


def test_admin_offers_no_bulk_delete_that_would_leave_files(operator):
    report_progress("job1", "complete", 100)  # the actions show once there is a task to act on
    page = operator.get("/admin/progress/task/").content.decode()
    assert "delete_everything" in page
    assert 'value="delete_selected"' not in page
