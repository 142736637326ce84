"""Audio of failed tasks is deleted once no retry can use it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from progress import cancel_task, report_error, report_progress, restart_task, start_task
from progress.models import Task
from transcription import throttle
from transcription.models import Hit, Transcription
from transcription.retention import HITS_KEPT, forget_unusable_audio, sweep

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


def test_retention_sweep_expires_old_reservations_only(settings):
    settings.TRANSCRIPTION_RESERVATION_TTL = 60
    old, fresh = start_task("uploading", owner="session:a"), start_task("uploading", owner="session:a")
    Task.objects.filter(pk=old).update(updated_at=timezone.now() - timedelta(seconds=61))
    sweep()
    assert Task.objects.get(pk=old).error_code == "upload_expired"
    assert Task.objects.get(pk=fresh).status == "running"


def test_retention_sweep_clears_expired_sessions_only():
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    expired, live = SessionStore(), SessionStore()
    expired.set_expiry(-10)
    expired["x"] = live["x"] = 1
    expired.save()
    live.save()
    sweep()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_retention_sweep_forgets_throttle_hits_past_a_day():
    now = time.time()
    throttle.record(["old"], lambda: now - HITS_KEPT - 10)
    throttle.record(["new"], lambda: now - 60)
    sweep()
    assert list(Hit.objects.values_list("key", flat=True)) == ["new"]


def test_retention_sweep_goes_on_after_a_failing_step(monkeypatch, settings):
    settings.TRANSCRIPTION_RESERVATION_TTL = 0

    def broken() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("transcription.retention.forget_unusable_audio", broken)
    task_id = start_task("uploading", owner="session:a")
    Task.objects.filter(pk=task_id).update(updated_at=timezone.now() - timedelta(seconds=1))
    sweep()
    assert Task.objects.get(pk=task_id).error_code == "upload_expired"


def test_retention_keep_results_deletes_old_ended_tasks_only(media, settings):
    settings.TRANSCRIPTION_KEEP_RESULTS = 3600
    old_done, old_failed, old_cancelled = (start_task("queued") for _ in range(3))
    report_progress(old_done, "complete", 100)
    report_error(old_failed, "boom", "It broke.")
    cancel_task(old_cancelled)
    young_done = start_task("queued")
    report_progress(young_done, "complete", 100)
    old_running = start_task("transcribing")
    Transcription.objects.create(task_id=old_done, result={"text": "private words"})
    long_ago = timezone.now() - timedelta(seconds=3601)
    Task.objects.exclude(pk=young_done).update(updated_at=long_ago)
    sweep()
    left = set(Task.objects.values_list("task_id", flat=True))
    assert left == {young_done, old_running}
    assert not Transcription.objects.filter(pk=old_done).exists()


def test_retention_keep_results_zero_keeps_everything(settings):
    settings.TRANSCRIPTION_KEEP_RESULTS = 0
    task_id = start_task("queued")
    report_progress(task_id, "complete", 100)
    Task.objects.update(updated_at=timezone.now() - timedelta(days=3650))
    sweep()
    assert Task.objects.filter(pk=task_id).exists()
