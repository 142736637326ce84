"""Audio of failed tasks is deleted once no retry can use it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from progress import report_error, report_progress, restart_task
from progress.models import Task
from transcription.models import Transcription
from transcription.retention import forget_unusable_audio

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def stored(media: Path, task_id: str) -> Path:
    path = media / "uploads" / f"{task_id}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    Transcription.objects.create(task_id=task_id, audio_path=f"uploads/{task_id}.wav")
    report_progress(task_id, "queued", 0)
    return path


def test_retention_keeps_audio_a_retry_can_use(media):
    path = stored(media, "t1")
    report_error("t1", "worker_lost", "Gone.")
    assert forget_unusable_audio() == []
    assert path.exists()


def test_retention_deletes_audio_of_a_task_out_of_attempts(media, settings):
    settings.TRANSCRIPTION_MAX_ATTEMPTS = 2
    path = stored(media, "t1")
    report_error("t1", "worker_lost", "Gone.")
    restart_task("t1")
    report_error("t1", "worker_lost", "Gone again.")
    assert forget_unusable_audio() == ["t1"]
    assert not path.exists()
    assert Transcription.objects.get(pk="t1").audio_path == ""


def test_retention_deletes_audio_that_failed_for_itself(media):
    path = stored(media, "t1")
    report_error("t1", "invalid_audio", "Not audio.")
    assert forget_unusable_audio() == ["t1"]
    assert not path.exists()


def test_retention_deletes_audio_past_the_keeping_time(media, settings):
    settings.TRANSCRIPTION_KEEP_FAILED_AUDIO = 60
    path = stored(media, "t1")
    report_error("t1", "worker_lost", "Gone.")
    Task.objects.filter(pk="t1").update(
        updated_at=Task.objects.get(pk="t1").updated_at - timedelta(minutes=2)
    )
    assert forget_unusable_audio() == ["t1"]
    assert not path.exists()


def test_retention_leaves_running_tasks_alone(media):
    path = stored(media, "t1")
    assert forget_unusable_audio() == []
    assert path.exists()
