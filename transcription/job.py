"""The job body: one attempt of a transcription, from the stored audio to the stored transcript.

A runner's turn calls ``run_next``: the fairest waiting task (progress.queue) runs, whichever upload
queued the turn."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from progress.queue import claim_next
from progress.recorder import Job, JobFailed, claim

from . import retention
from .conf import limits
from .models import Transcription
from .pipeline import AudioError, transcribe_file

log = logging.getLogger("transcription")


def run_next(queued_for: str = "") -> str | None:
    """Run the waiting transcription that is fairest to start now; its task id, or None if none waits.

    ``queued_for`` names the task whose wait queued this turn, for the log only."""
    job = claim_next()
    if job is None:
        log.info("transcription: a turn (queued for task %s) found no task waiting", queued_for or "-")
        return None
    _run(job)
    return job.task_id


def run(task_id: str, attempt: int) -> bool:
    """Run one attempt of a transcription if it is still waiting; True if this call ran it."""
    job = claim(task_id, attempt)
    if job is None:
        return False
    _run(job)
    return True


def _run(job: Job) -> None:
    with job:
        _transcribe(job)
    try:
        retention.forget_unusable_audio()  # this job's audio too, if it failed for good
    except Exception:
        log.exception("transcription: could not delete unusable audio")


def _transcribe(job: Job) -> None:
    record = Transcription.objects.filter(pk=job.task_id).first()
    path = Path(settings.MEDIA_ROOT) / record.audio_path if record and record.audio_path else None
    if record is None or path is None or not path.is_file():
        raise JobFailed("audio_missing", "The uploaded audio is no longer available; please upload it again.")

    def on_progress(stage: str, percentage: int, message: str | None) -> None:
        job.check()  # a cancelled attempt (failed by the reaper, retried) stops here
        job.progress(stage, percentage, message)

    try:
        transcript = transcribe_file(
            path,
            on_progress,
            max_seconds=limits().max_audio_seconds,  # whatever the header said at upload
            workdir=Path(settings.FILE_UPLOAD_TEMP_DIR),
            check=job.check,  # a cancelled or deleted task stops between chunks
        )
    except AudioError as exc:
        raise JobFailed(exc.error_code, exc.user_message, str(exc)) from exc
    job.check()
    record.result = transcript.to_json()
    record.completed_at = timezone.now()
    record.save(update_fields=["result", "completed_at"])
    job.result = record.result
    path.unlink(missing_ok=True)  # the transcript is kept; the audio is not needed again
    Transcription.objects.filter(pk=job.task_id).update(audio_path="")
