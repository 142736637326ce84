"""The transcription app: audio uploads, transcription jobs and their results."""

from __future__ import annotations

from django.apps import AppConfig


class TranscriptionConfig(AppConfig):
    """Registers the Transcription model and the Celery task."""

    name = "transcription"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Queue the attempts operators start from the admin; delete a deleted task's audio and transcript;
        add the broker to /readyz with Celery."""
        from progress.health import register_check
        from progress.signals import task_deleted, task_restarted

        from .retention import forget_everything
        from .runners import broker_reachable, queue_operator_retry, uses_celery

        task_restarted.connect(queue_operator_retry, dispatch_uid="transcription-retry")
        task_deleted.connect(forget_everything, dispatch_uid="transcription-delete")

        if uses_celery():
            register_check("broker", broker_reachable)
