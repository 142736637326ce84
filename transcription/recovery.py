"""Start-up and housekeeping: work an earlier server process left behind, and audio nobody can use."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.db import connection

from progress import report_error, tasks
from progress.schemas import TaskStatus, utcnow

from . import retention
from .models import Transcription, Upload
from .runners import enqueue, uses_celery
from .stages import QUEUED, UPLOADING

log = logging.getLogger("transcription")

_STARTED = utcnow()
"""When this process loaded the runner: queued work older than this is not in its in-memory queue."""
_recovered = False

SWEEP_INTERVAL = 60.0
"""Seconds between two housekeeping sweeps (retention.sweep): unusable audio, expired reservations and
sessions, old throttle hits."""


def ensure_recovered() -> None:
    """Once per server process: pick up work an earlier process left behind (embedded default), then
    sweep what is no longer kept (retention.sweep) every SWEEP_INTERVAL."""
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
            retention.sweep()
        finally:
            connection.close()
        time.sleep(SWEEP_INTERVAL)


def recover(before: datetime) -> list[str]:
    """Re-queue tasks queued before ``before`` (the in-process queue died with its server) and fail
    single-request uploads cut off then (resumable ones wait for their client); the re-queued ids.
    A claim keeps a re-queued job from running twice."""
    unclaimed = tasks.select(status=TaskStatus.RUNNING.value, claimed=False, updated_before=before)
    requeued = []
    resumable = set(Upload.objects.values_list("task_id", flat=True))  # their clients resume them
    for task in unclaimed:
        task_id, attempt, stage = task.task_id, task.attempt, task.stage
        if stage == UPLOADING and task_id not in resumable:
            report_error(
                task_id,
                "upload_interrupted",
                "The server restarted before the upload finished; please upload the file again.",
                attempt=attempt,
            )
        elif stage == QUEUED and Transcription.objects.filter(pk=task_id).exclude(audio_path="").exists():
            log.info(
                "transcription: re-queueing task %s attempt %s left by an earlier process", task_id, attempt
            )
            enqueue(task_id, attempt)
            requeued.append(task_id)
    return requeued
