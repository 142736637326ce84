"""The job recorder: claims, heartbeats, progress, completion and errors reported however a job ends."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from progress import report_error, report_progress, restart_task
from progress.models import Task
from progress.recorder import JobFailed, claim, track
from progress.schemas import ErrorMessage, utcnow
from progress.snapshots import read

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def queued(task_id: str = "job1") -> str:
    report_progress(task_id, "queued", 0)
    return task_id


def wait_for(condition, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_recorder_claim_takes_a_queued_attempt_once():
    queued()
    assert claim("job1", 1) is not None
    assert claim("job1", 1) is None


def test_recorder_claim_refuses_a_failed_task():
    queued()
    report_error("job1", "boom", "It broke.")
    assert claim("job1", 1) is None


def test_recorder_claim_refuses_an_old_attempt_after_retry():
    queued()
    report_error("job1", "boom", "It broke.")
    assert restart_task("job1") == 2
    assert claim("job1", 1) is None
    assert claim("job1", 2) is not None


def test_recorder_claim_refuses_an_unknown_task():
    assert claim("nobody", 1) is None


def test_recorder_progress_is_stored_for_the_attempt():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        assert job.progress("transcribing", 30, "chunk 1")
    task = Task.objects.get(pk="job1")
    assert (task.stage, task.percentage, task.message) == ("transcribing", 30, "chunk 1")


def test_recorder_result_reports_complete():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        job.progress("transcribing", 50)
        job.result = {"text": "hello"}
    task = Task.objects.get(pk="job1")
    assert (task.status, task.stage, task.percentage) == ("complete", "complete", 100)


def test_recorder_no_result_leaves_task_running():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        job.progress("transcribing", 50)
    assert Task.objects.get(pk="job1").status == "running"


def test_recorder_exception_becomes_error_with_traceback():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        job.progress("transcribing", 10)
        _ = 1 / 0
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "job_failed")
    assert task.user_message == "The job failed unexpectedly."
    assert "ZeroDivisionError" in (task.technical_detail or "")


def terminal_frame(task_id: str = "job1") -> str | None:
    """The frame that ended the task, as a late watcher is sent it."""
    view = read(task_id)
    return view.terminal if view else None


def test_recorder_job_failed_carries_its_code_and_message():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        raise JobFailed("bad_audio", "That file is not audio we can read.", "no RIFF header")
    frame = terminal_frame()
    assert frame is not None
    error = ErrorMessage.model_validate_json(frame)
    assert (error.error_code, error.user_message, error.technical_detail) == (
        "bad_audio",
        "That file is not audio we can read.",
        "no RIFF header",
    )


def test_recorder_huge_traceback_is_cut_to_fit_the_protocol():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        raise RuntimeError("x" * 50_000)
    task = Task.objects.get(pk="job1")
    assert task.status == "failed"
    assert 0 < len(task.technical_detail or "") <= 10_000


def test_recorder_bad_report_never_raises():
    job = claim(queued(), 1)
    assert job is not None
    with job:
        assert job.progress("no-such-stage", 10) is False
        assert job.progress("transcribing", 500) is False
    assert Task.objects.get(pk="job1").stage == "queued"


def test_recorder_heartbeat_keeps_a_quiet_job_alive():
    job = claim(queued(), 1, beat_interval=0.05)
    assert job is not None
    with job:
        first = Task.objects.get(pk="job1").heartbeat_at
        assert first is not None
        assert wait_for(lambda: Task.objects.get(pk="job1").heartbeat_at != first)


def test_recorder_cancelled_once_the_task_is_failed_elsewhere():
    job = claim(queued(), 1, beat_interval=0.05)
    assert job is not None
    with job:
        assert not job.cancelled
        report_error("job1", "worker_lost", "Gone.", attempt=1)
        assert wait_for(lambda: job.cancelled)
        job.result = "late"
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "worker_lost")


def test_recorder_old_attempt_reports_are_ignored():
    queued()
    old = claim("job1", 1)
    assert old is not None
    report_error("job1", "worker_lost", "Gone.", attempt=1)
    restart_task("job1")
    with old:
        assert old.progress("transcribing", 90) is False
    task = Task.objects.get(pk="job1")
    assert (task.attempt, task.stage, task.percentage) == (2, "queued", 0)


def test_recorder_track_works_without_a_claim():
    queued()
    Task.objects.filter(pk="job1").update(heartbeat_at=utcnow() - timedelta(seconds=5))
    with track("job1", 1) as job:
        job.progress("aligning", 5)
        job.result = 1
    assert Task.objects.get(pk="job1").status == "complete"


def test_recorder_check_stops_a_cancelled_job_without_reporting():
    job = claim(queued(), 1, beat_interval=0.05)
    assert job is not None
    reached = []
    with job:
        job.check()
        report_error("job1", "worker_lost", "Gone.", attempt=1)
        assert wait_for(lambda: job.cancelled)
        job.check()
        reached.append("after")
    assert reached == []
    assert Task.objects.get(pk="job1").error_code == "worker_lost"


def test_recorder_api_is_exported_by_the_package():
    import progress
    from progress import recorder

    assert (progress.track, progress.claim, progress.JobFailed) == (recorder.track, recorder.claim, JobFailed)
