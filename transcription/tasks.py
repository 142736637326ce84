"""The Celery task: a thin shell around job.run, acknowledged only once the job has ended."""

from __future__ import annotations

from celery import shared_task

from .job import run


@shared_task(name="transcription.transcribe", acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def transcribe(task_id: str, attempt: int) -> None:
    """Run one attempt of a transcription; a redelivered or outdated message does nothing."""
    run(task_id, attempt)
