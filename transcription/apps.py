"""The transcription app: audio uploads, transcription jobs and their results."""

from __future__ import annotations

from django.apps import AppConfig


class TranscriptionConfig(AppConfig):
    """Registers the Transcription model and the Celery task."""

    name = "transcription"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Queue the attempts operators start from the admin; add the broker to /readyz with Celery."""
        from progress.health import register_check
        from progress.signals import task_restarted

        from .runners import broker_reachable, queue_operator_retry, uses_celery

        task_restarted.connect(queue_operator_retry, dispatch_uid="transcription-retry")

        if uses_celery():
            register_check("broker", broker_reachable)
