"""Reading tasks through progress.tasks, and that the audio app reads them no other way."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from progress import report_progress, start_task, tasks
from progress.models import Task
from progress.queue import claim_next
from progress.schemas import utcnow

AUDIO_APP = Path(__file__).resolve().parents[2] / "transcription"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


def test_tasks_get_and_exists():
    task_id = start_task("queued", owner="session:a")
    found = tasks.get(task_id)
    assert found is not None
    assert (found.owner, found.status, found.stage, found.attempt) == ("session:a", "running", "queued", 1)
    assert found.running
    assert not found.claimed
    assert tasks.exists(task_id)
    assert tasks.get("nobody") is None
    assert not tasks.exists("nobody")


def ids(found: list[tasks.TaskInfo]) -> list[str]:
    return [t.task_id for t in found]


def test_tasks_select_by_every_condition():
    mine = [start_task("queued", owner="session:a") for _ in range(3)]
    theirs = start_task("uploading", owner="session:b")
    report_progress(mine[0], "complete", 100)
    claim_next()  # claims mine[1]
    Task.objects.filter(pk=mine[2]).update(updated_at=utcnow() - timedelta(hours=2))
    assert ids(tasks.select(owners=["session:a"])) == mine
    assert ids(tasks.select(owners=["session:a"], newest_first=True, limit=2)) == mine[::-1][:2]
    assert ids(tasks.select(status="complete")) == [mine[0]]
    assert ids(tasks.select(status=["complete", "running"], stage="uploading")) == [theirs]
    assert ids(tasks.select(status="running", claimed=True)) == [mine[1]]
    assert ids(tasks.select(updated_before=utcnow() - timedelta(hours=1))) == [mine[2]]
    assert ids(tasks.select(ids=[theirs, "nobody"])) == [theirs]


def test_tasks_the_audio_app_never_reads_the_model():
    reads = [
        f"{path.name}:{number}"
        for path in AUDIO_APP.rglob("*.py")
        if "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"progress\.models|Task\.objects", line)
    ]
    assert reads == []
