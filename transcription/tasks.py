"""The Celery task: a thin shell around job.run_next, acknowledged only once the job has ended."""

from __future__ import annotations

from celery import shared_task

from .job import run_next


@shared_task(name="transcription.transcribe", acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def transcribe(task_id: str, attempt: int) -> None:
    """A turn, queued when ``task_id``'s ``attempt`` began to wait: runs the fairest waiting task (maybe
    another owner's), or nothing if none waits (a redelivered or outdated turn)."""
    run_next(f"{task_id} attempt {attempt}")
