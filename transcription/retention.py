"""What is kept, and for how long: uploaded audio only while a job can still use it (a transcript, or
a retry, needs it); a reservation only while its upload may still come; an ended task, its transcript
and its history for KEEP_RESULTS."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from progress import delete_task, report_error, tasks
from progress.schemas import TaskStatus
from progress.state import RESTARTABLE_VALUES

from . import throttle
from .conf import limits
from .models import Transcription, Upload
from .resumable import expire_uploads, part_path
from .stages import UPLOADING

log = logging.getLogger("transcription")

FINAL_ERRORS = frozenset({"invalid_audio", "audio_too_long", "audio_missing", "upload_rejected"})
"""Failures a retry of the same audio cannot mend."""


def forget_unusable_audio() -> list[str]:
    """Delete the audio of failed tasks that no retry can use (out of attempts, failed for the audio
    itself, or failed longer ago than KEEP_FAILED_AUDIO); the task ids whose audio went."""
    keep = timedelta(seconds=limits().keep_failed_audio)
    stored_ids = Transcription.objects.exclude(audio_path="").values_list("task_id", flat=True)
    gone = []
    for task in tasks.select(ids=stored_ids, status=RESTARTABLE_VALUES):  # ended, and a retry may follow
        if (
            task.attempt >= limits().max_attempts
            or task.error_code in FINAL_ERRORS
            or task.updated_at < timezone.now() - keep
        ):
            forget(task.task_id)
            gone.append(task.task_id)
    return gone


def forget_everything(sender: Any, task_id: str, **kwargs: Any) -> None:
    """``progress.signals.task_deleted``: the task's audio, its transcription record and any
    unfinished resumable upload of it go."""
    forget(task_id)
    Transcription.objects.filter(pk=task_id).delete()
    for upload_id in Upload.objects.filter(task_id=task_id).values_list("upload_id", flat=True):
        part_path(upload_id).unlink(missing_ok=True)
    Upload.objects.filter(task_id=task_id).delete()


def forget_old_tasks() -> list[str]:
    """Delete ended tasks (complete, failed, cancelled) older than KEEP_RESULTS, with everything of
    them (``progress.delete_task``); the ids deleted. KEEP_RESULTS 0 keeps them."""
    keep = limits().keep_results
    if keep <= 0:
        return []
    cutoff = timezone.now() - timedelta(seconds=keep)
    ended = [s.value for s in TaskStatus if s is not TaskStatus.RUNNING]
    old = tasks.select(status=ended, updated_before=cutoff)
    deleted = [t.task_id for t in old if delete_task(t.task_id)]
    if deleted:
        log.info("transcription: deleted %s tasks older than %g s", len(deleted), keep)
    return deleted


def forget(task_id: str) -> None:
    """Delete one task's stored audio, and say so in its record (a retry then answers nothing_to_retry)."""
    record = Transcription.objects.filter(pk=task_id).exclude(audio_path="").first()
    if record is None:
        return
    (Path(settings.MEDIA_ROOT) / record.audio_path).unlink(missing_ok=True)
    Transcription.objects.filter(pk=task_id).update(audio_path="")
    log.info("transcription: deleted the audio of task %s, which no retry can use", task_id)


def expire_reservations(owner: str | None = None) -> list[str]:
    """Fail reservations (of ``owner``, or everyone's) whose upload did not come within
    RESERVATION_TTL (``upload_expired``): they stop counting against the owner; the ids failed."""
    cutoff = timezone.now() - timedelta(seconds=limits().reservation_ttl)
    waiting = tasks.select(
        status=TaskStatus.RUNNING.value,
        stage=UPLOADING,
        updated_before=cutoff,
        owners=None if owner is None else [owner],
    )
    message = "No file arrived for this task in time; please upload again."
    resumable = set(Upload.objects.values_list("task_id", flat=True))  # they expire on their own time
    expired = [
        t.task_id
        for t in waiting
        if t.task_id not in resumable and report_error(t.task_id, "upload_expired", message)
    ]
    if expired:
        log.info("transcription: %s reservations expired without their upload", len(expired))
    return expired


HITS_KEPT = 25 * 3600.0
"""Seconds of throttle hits kept: longer than any window looks back."""


def sweep() -> None:
    """Housekeeping, every SWEEP_INTERVAL in every server process: each step on its own, so one that
    fails does not keep the others from running."""
    steps = (
        forget_old_tasks,
        forget_unusable_audio,
        expire_reservations,
        expire_uploads,
        clear_expired_sessions,
        forget_old_hits,
    )
    for step in steps:
        try:
            step()
        except Exception:
            log.exception("transcription: housekeeping step %s failed", getattr(step, "__name__", step))


def clear_expired_sessions() -> None:
    """Delete sessions past their expiry (what ``manage.py clearsessions`` does), when sessions are used."""
    if "django.contrib.sessions" in settings.INSTALLED_APPS:
        import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()


def forget_old_hits() -> None:
    """Delete throttle hits no window looks back to."""
    throttle.forget_before(time.time() - HITS_KEPT)
