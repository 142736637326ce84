"""Uploaded audio is kept only while a job can still use it: a transcript, or a retry, needs it."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from progress.models import Task
from progress.schemas import TaskStatus

from .conf import limits
from .models import Transcription

log = logging.getLogger("transcription")

FINAL_ERRORS = frozenset({"invalid_audio", "audio_too_long", "audio_missing", "upload_rejected"})
"""Failures a retry of the same audio cannot mend."""


def forget_unusable_audio() -> list[str]:
    """Delete the audio of failed tasks that no retry can use (out of attempts, failed for the audio
    itself, or failed longer ago than KEEP_FAILED_AUDIO); the task ids whose audio went."""
    keep = timedelta(seconds=limits().keep_failed_audio)
    stored = Transcription.objects.exclude(audio_path="").values("task_id")
    failed = Task.objects.filter(status=TaskStatus.FAILED.value, task_id__in=stored)
    gone = []
    for task_id, attempt, code, updated in failed.values_list(
        "task_id", "attempt", "error_code", "updated_at"
    ):
        if attempt >= limits().max_attempts or code in FINAL_ERRORS or updated < timezone.now() - keep:
            forget(task_id)
            gone.append(task_id)
    return gone


def forget(task_id: str) -> None:
    """Delete one task's stored audio, and say so in its record (a retry then answers nothing_to_retry)."""
    record = Transcription.objects.filter(pk=task_id).exclude(audio_path="").first()
    if record is None:
        return
    (Path(settings.MEDIA_ROOT) / record.audio_path).unlink(missing_ok=True)
    Transcription.objects.filter(pk=task_id).update(audio_path="")
    log.info("transcription: deleted the audio of task %s, which no retry can use", task_id)
