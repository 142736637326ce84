"""The job runner: claims an attempt, transcribes real speech, stores the transcript, fails loudly."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from progress import report_error, report_progress, restart_task
from progress.models import Task, TaskEvent
from progress.schemas import utcnow
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from transcription import jobs
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    (settings.MEDIA_ROOT / "uploads").mkdir(parents=True)
    return Path(settings.MEDIA_ROOT)


def uploaded(media: Path, source: Path, task_id: str = "job1") -> Path:
    """A task queued with ``source`` as its stored upload, as the upload view leaves it."""
    target = media / "uploads" / f"{task_id}.wav"
    target.write_bytes(source.read_bytes())
    Transcription.objects.create(
        task_id=task_id, audio_path=f"uploads/{task_id}.wav", size=target.stat().st_size
    )
    report_progress(task_id, "queued", 0)
    return target


def stages(task_id: str = "job1") -> list[str]:
    rows = TaskEvent.objects.filter(task_id=task_id, stage__isnull=False).values_list("stage", flat=True)
    return [str(stage) for stage in rows]


def test_jobs_run_transcribes_and_stores_the_transcript(media, tmp_path):
    speech = make_speech_wav(tmp_path / "audio")
    stored = uploaded(media, speech)
    assert jobs.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.stage, task.percentage) == ("complete", "complete", 100)
    assert stages() == ["queued", "transcribing", "aligning", "diarizing", "complete"]
    result = Transcription.objects.get(pk="job1").result
    assert result is not None
    assert set(result) == {"text", "segments", "words"}
    assert fraction_recognised(spoken_text(speech), result["text"]) >= 0.6
    assert all(s["speaker"] for s in result["segments"])
    assert not stored.exists()


def test_jobs_run_twice_runs_once(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    assert jobs.run("job1", 1)
    seq = Task.objects.get(pk="job1").seq
    assert not jobs.run("job1", 1)
    assert Task.objects.get(pk="job1").seq == seq


def test_jobs_redelivered_after_failure_does_not_run(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_error("job1", "worker_lost", "Gone.", attempt=1)
    assert not jobs.run("job1", 1)
    assert Task.objects.get(pk="job1").status == "failed"


def test_jobs_old_attempt_after_retry_does_not_run(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_error("job1", "worker_lost", "Gone.", attempt=1)
    assert restart_task("job1") == 2
    assert not jobs.run("job1", 1)
    assert jobs.run("job1", 2)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.attempt) == ("complete", 2)


def test_jobs_bad_audio_fails_with_a_user_message(media, tmp_path):
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200)
    uploaded(media, bogus)
    assert jobs.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "invalid_audio")
    assert task.user_message
    assert task.technical_detail


def test_jobs_missing_audio_fails(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio")).unlink()
    assert jobs.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "audio_missing")


def test_jobs_enqueue_without_redis_runs_in_the_pool(media, tmp_path, settings):
    settings.REDIS_URL = ""
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    jobs.enqueue("job1", 1)
    deadline = time.monotonic() + 120
    while Task.objects.get(pk="job1").status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Task.objects.get(pk="job1").status == "complete"


def test_jobs_recover_requeues_work_an_earlier_process_left_queued(media, tmp_path, settings):
    settings.REDIS_URL = ""
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    assert jobs.recover(before=utcnow() + timedelta(seconds=1)) == ["job1"]
    deadline = time.monotonic() + 120
    while Task.objects.get(pk="job1").status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Task.objects.get(pk="job1").status == "complete"


def test_jobs_recover_fails_an_upload_cut_off_by_a_restart(media):
    report_progress("up1", "uploading", 30)
    assert jobs.recover(before=utcnow() + timedelta(seconds=1)) == []
    task = Task.objects.get(pk="up1")
    assert (task.status, task.error_code) == ("failed", "upload_interrupted")


def test_jobs_recover_leaves_work_of_this_process(media, tmp_path):
    before = utcnow()
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_progress("up1", "uploading", 30)
    assert jobs.recover(before=before) == []
    assert list(Task.objects.values_list("status", flat=True)) == ["running", "running"]
