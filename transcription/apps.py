"""The transcription app: audio uploads, transcription jobs and their results."""

from __future__ import annotations

from django.apps import AppConfig


class TranscriptionConfig(AppConfig):
    """Registers the Transcription model and the Celery task."""

    name = "transcription"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Add the job broker to /readyz when jobs go to Celery."""
        from progress.health import register_check

        from .jobs import broker_reachable, uses_celery

        if uses_celery():
            register_check("broker", broker_reachable)
