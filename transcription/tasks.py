"""The Celery task: a thin shell around jobs.run, acknowledged only once the job has ended."""

from __future__ import annotations

from transcribe_project.celery import app


@app.task(name="transcription.transcribe", acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def transcribe(task_id: str, attempt: int) -> None:
    """Run one attempt of a transcription; a redelivered or outdated message does nothing."""
    from .jobs import run

    run(task_id, attempt)
