"""Runs transcription jobs: Celery on Redis when REDIS_URL is set, else a bounded in-process pool."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from progress.recorder import Job, JobFailed, claim
from progress.schemas import ProgressStage

from .models import Transcription

log = logging.getLogger("transcription")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def uses_celery() -> bool:
    """Whether jobs go to Celery workers (REDIS_URL set) rather than the server's own threads."""
    return bool(getattr(settings, "REDIS_URL", ""))


def enqueue(task_id: str, attempt: int) -> None:
    """Hand attempt ``attempt`` of a queued task to whatever runs jobs here; raises if it cannot."""
    if uses_celery():
        from .tasks import transcribe

        transcribe.apply_async(
            (task_id, attempt),
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )
    else:
        _local_pool().submit(_run_in_pool, task_id, attempt)


def _local_pool() -> ThreadPoolExecutor:
    """The in-process pool, created on first use together with a reaper thread."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from progress.reaper import start_thread

            _pool = ThreadPoolExecutor(
                max_workers=settings.TRANSCRIPTION_WORKERS, thread_name_prefix="transcription"
            )
            start_thread()
        return _pool


def _run_in_pool(task_id: str, attempt: int) -> None:
    try:
        run(task_id, attempt)
    except Exception:
        log.exception("transcription: job %s crashed outside its recorder", task_id)
    finally:
        connection.close()


def run(task_id: str, attempt: int) -> bool:
    """Run one attempt of a transcription if it is still waiting; True if this call ran it."""
    job = claim(task_id, attempt)
    if job is None:
        return False
    with job:
        _transcribe(job)
    return True


def _transcribe(job: Job) -> None:
    from .pipeline import AudioError, transcribe_file

    record = Transcription.objects.filter(pk=job.task_id).first()
    path = Path(settings.MEDIA_ROOT) / record.audio_path if record and record.audio_path else None
    if record is None or path is None or not path.is_file():
        raise JobFailed("audio_missing", "The uploaded audio is no longer available; please upload it again.")

    def on_progress(stage: ProgressStage, percentage: int, message: str | None) -> None:
        job.check()  # a cancelled attempt (failed by the reaper, retried) stops here
        job.progress(stage, percentage, message)

    try:
        transcript = transcribe_file(path, on_progress)
    except AudioError as exc:
        raise JobFailed(exc.error_code, exc.user_message, str(exc)) from exc
    job.check()
    record.result = transcript.to_json()
    record.completed_at = timezone.now()
    record.save(update_fields=["result", "completed_at"])
    job.result = record.result
    path.unlink(missing_ok=True)  # the transcript is kept; the audio is not needed again
    Transcription.objects.filter(pk=job.task_id).update(audio_path="")
