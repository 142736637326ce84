"""Where jobs run: the in-process pool, and what a failed enqueue leaves behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from progress import report_progress
from progress.models import Task
from tests.fixtures_audio import make_speech_wav
from tests.jobs_helpers import uploaded
from transcription import runners

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def test_runners_enqueue_without_redis_runs_in_the_pool(media, tmp_path, settings):
    settings.REDIS_URL = ""
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    runners.enqueue("job1", 1)
    deadline = time.monotonic() + 120
    while Task.objects.get(pk="job1").status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Task.objects.get(pk="job1").status == "complete"


def test_runners_enqueue_or_fail_fails_the_task_when_the_queue_is_down(monkeypatch):
    report_progress("job1", "queued", 0)

    def broken(task_id: str, attempt: int) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(runners, "enqueue", broken)
    assert not runners.enqueue_or_fail("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "enqueue_failed")


def test_runners_operator_retry_without_audio_fails(media):
    report_progress("job1", "queued", 0)
    runners.queue_operator_retry(None, task_id="job1", attempt=1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "nothing_to_retry")


def test_runners_no_import_cycle():
    import ast

    import transcription

    package = Path(transcription.__file__).parent
    job_imports = {
        node.module
        for node in ast.walk(ast.parse((package / "job.py").read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }
    assert "runners" not in job_imports
    assert "tasks" not in job_imports
