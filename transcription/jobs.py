"""Runs transcription jobs: Celery on Redis when REDIS_URL is set, else a bounded in-process pool."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from progress import report_error
from progress.models import Task
from progress.recorder import Job, JobFailed, claim
from progress.schemas import ProgressStage, TaskStatus, utcnow

from . import retention
from .models import Transcription

log = logging.getLogger("transcription")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_STARTED = utcnow()
"""When this process loaded the runner: queued work older than this is not in its in-memory queue."""
_recovered = False


def uses_celery() -> bool:
    """Whether jobs go to Celery workers (REDIS_URL set) rather than the server's own threads."""
    return bool(getattr(settings, "REDIS_URL", ""))


async def broker_reachable() -> None:
    """Raise unless the Celery broker answers (a /readyz check)."""
    from asgiref.sync import sync_to_async

    from .tasks import transcribe

    def connect() -> None:
        with transcribe.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=1)

    await sync_to_async(connect, thread_sensitive=False)()


def queue_operator_retry(sender: Any, task_id: str, attempt: int, **kwargs: Any) -> None:
    """An operator retried a failed task in the admin: queue the attempt, or fail it if it cannot run."""
    if not Transcription.objects.filter(pk=task_id).exclude(audio_path="").exists():
        report_error(
            task_id, "nothing_to_retry", "The audio is gone; please upload it again.", attempt=attempt
        )
        return
    try:
        enqueue(task_id, attempt)
    except Exception as exc:
        log.exception("transcription: could not enqueue task %s", task_id)
        report_error(task_id, "enqueue_failed", "The job could not be queued; please retry.", repr(exc))


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
    """The in-process pool, created on first use (the server's loop reaper watches its jobs)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.TRANSCRIPTION_WORKERS, thread_name_prefix="transcription"
            )
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
    try:
        retention.forget_unusable_audio()  # this job's audio too, if it failed for good
    except Exception:
        log.exception("transcription: could not delete unusable audio")
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


SWEEP_INTERVAL = 60.0
"""Seconds between two looks for audio no retry can use (a reaped task's, one past the keeping time)."""


def ensure_recovered() -> None:
    """Once per server process: pick up work an earlier process left behind (embedded default), and
    delete audio no retry can use, from then on."""
    global _recovered
    if _recovered:
        return
    _recovered = True
    threading.Thread(target=_housekeeping, name="transcription-housekeeping", daemon=True).start()


def _housekeeping() -> None:
    if not uses_celery():
        try:
            recover(_STARTED)
        except Exception:
            log.exception("transcription: could not recover jobs left by an earlier process")
        finally:
            connection.close()
    while True:
        try:
            retention.forget_unusable_audio()
        except Exception:
            log.exception("transcription: could not delete unusable audio")
        finally:
            connection.close()
        time.sleep(SWEEP_INTERVAL)


def recover(before: datetime) -> list[str]:
    """Re-queue tasks queued before ``before`` (the in-process queue died with its server) and fail
    uploads that were cut off then; the re-queued ids. A claim keeps a re-queued job from running twice."""
    running = Task.objects.filter(
        status=TaskStatus.RUNNING.value, heartbeat_at__isnull=True, updated_at__lt=before
    )
    requeued = []
    for task_id, attempt, stage in running.values_list("task_id", "attempt", "stage"):
        if stage == ProgressStage.UPLOADING.value:
            report_error(
                task_id,
                "upload_interrupted",
                "The server restarted before the upload finished; please upload the file again.",
                attempt=attempt,
            )
        elif (
            stage == ProgressStage.QUEUED.value
            and Transcription.objects.filter(pk=task_id).exclude(audio_path="").exists()
        ):
            log.info(
                "transcription: re-queueing task %s attempt %s left by an earlier process", task_id, attempt
            )
            enqueue(task_id, attempt)
            requeued.append(task_id)
    return requeued
