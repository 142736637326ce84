"""Tasks set up as the upload view leaves them, for the job tests."""

from __future__ import annotations

from pathlib import Path

from progress import report_progress
from progress.models import TaskEvent
from transcription.models import Transcription


def uploaded(media: Path, source: Path, task_id: str = "job1") -> Path:
    """A task queued with ``source`` as its stored upload, as the upload view leaves it."""
    target = media / "uploads" / f"{task_id}.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    Transcription.objects.create(
        task_id=task_id, audio_path=f"uploads/{task_id}.wav", size=target.stat().st_size
    )
    report_progress(task_id, "queued", 0)
    return target


def stages(task_id: str = "job1") -> list[str]:
    rows = TaskEvent.objects.filter(task_id=task_id, stage__isnull=False).values_list("stage", flat=True)
    return [str(stage) for stage in rows]
