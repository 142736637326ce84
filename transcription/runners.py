"""Where jobs run: Celery workers on Redis (REDIS_URL or REDIS_SENTINELS set), else a bounded pool in
the server."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from progress import report_error

from .job import run_next
from .models import Transcription
from .tasks import transcribe

log = logging.getLogger("transcription")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def uses_celery() -> bool:
    """Whether jobs go to Celery workers (Redis configured) rather than the server's own threads."""
    return bool(getattr(settings, "REDIS_URL", "") or getattr(settings, "REDIS_SENTINELS", ()))


async def broker_reachable() -> None:
    """Raise unless the Celery broker answers (a /readyz check)."""

    def connect() -> None:
        with transcribe.app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=1)

    await sync_to_async(connect, thread_sensitive=False)()


def enqueue(task_id: str, attempt: int) -> None:
    """Give whatever runs jobs here one more turn, as attempt ``attempt`` of ``task_id`` starts to wait;
    the turn runs the fairest waiting task (progress.queue). Raises if it cannot."""
    if uses_celery():
        transcribe.apply_async(
            (task_id, attempt),
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )
    else:
        _local_pool().submit(_run_in_pool, f"{task_id} attempt {attempt}")


def enqueue_or_fail(task_id: str, attempt: int) -> bool:
    """Enqueue an attempt; if the queue is unavailable, fail the task so its watchers see why (False)."""
    try:
        enqueue(task_id, attempt)
    except Exception as exc:
        log.exception("transcription: could not enqueue task %s", task_id)
        report_error(
            task_id,
            "enqueue_failed",
            "The job could not be queued; please retry.",
            repr(exc),
            attempt=attempt,
        )
        return False
    return True


def queue_operator_retry(sender: Any, task_id: str, attempt: int, **kwargs: Any) -> None:
    """An operator retried a failed task in the admin: queue the attempt, or fail it if it cannot run."""
    if not Transcription.objects.filter(pk=task_id).exclude(audio_path="").exists():
        report_error(
            task_id, "nothing_to_retry", "The audio is gone; please upload it again.", attempt=attempt
        )
        return
    enqueue_or_fail(task_id, attempt)


def _local_pool() -> ThreadPoolExecutor:
    """The in-process pool, created on first use (the server's loop reaper watches its jobs)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.TRANSCRIPTION_WORKERS, thread_name_prefix="transcription"
            )
        return _pool


def _run_in_pool(queued_for: str) -> None:
    try:
        run_next(queued_for)
    except Exception:
        log.exception("transcription: a job crashed outside its recorder")
    finally:
        connection.close()
