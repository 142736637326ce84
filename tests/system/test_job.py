"""The job body: claims an attempt, transcribes real speech, stores the transcript, fails loudly."""

from __future__ import annotations

import pytest

from progress import report_error, restart_task
from progress.models import Task
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from tests.jobs_helpers import stages, uploaded
from transcription import job
from transcription.models import Transcription

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def test_job_run_transcribes_and_stores_the_transcript(media, tmp_path):
    speech = make_speech_wav(tmp_path / "audio")
    stored = uploaded(media, speech)
    assert job.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.stage, task.percentage) == ("complete", "complete", 100)
    assert stages() == ["queued", "transcribing", "aligning", "diarizing", "complete"]
    result = Transcription.objects.get(pk="job1").result
    assert result is not None
    assert set(result) == {"text", "segments", "words"}
    assert fraction_recognised(spoken_text(speech), result["text"]) >= 0.6
    assert all(s["speaker"] for s in result["segments"])
    assert not stored.exists()


def test_job_run_twice_runs_once(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    assert job.run("job1", 1)
    seq = Task.objects.get(pk="job1").seq
    assert not job.run("job1", 1)
    assert Task.objects.get(pk="job1").seq == seq


def test_job_redelivered_after_failure_does_not_run(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_error("job1", "worker_lost", "Gone.", attempt=1)
    assert not job.run("job1", 1)
    assert Task.objects.get(pk="job1").status == "failed"


def test_job_old_attempt_after_retry_does_not_run(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_error("job1", "worker_lost", "Gone.", attempt=1)
    assert restart_task("job1") == 2
    assert not job.run("job1", 1)
    assert job.run("job1", 2)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.attempt) == ("complete", 2)


def test_job_bad_audio_fails_with_a_user_message(media, tmp_path):
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200)
    uploaded(media, bogus)
    assert job.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "invalid_audio")
    assert task.user_message
    assert task.technical_detail


def test_job_missing_audio_fails(media, tmp_path):
    uploaded(media, make_speech_wav(tmp_path / "audio")).unlink()
    assert job.run("job1", 1)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", "audio_missing")
