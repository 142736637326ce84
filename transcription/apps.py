"""The transcription app: audio uploads, transcription jobs and their results."""

from __future__ import annotations

from django.apps import AppConfig


class TranscriptionConfig(AppConfig):
    """Registers the Transcription model and the Celery task."""

    name = "transcription"
    default_auto_field = "django.db.models.BigAutoField"
