"""The reaper: running tasks whose job stopped heartbeating are failed once, and watchers are told."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async

from progress import areport_progress, report_progress, restart_task
from progress import reaper as reaper_module
from progress.models import Task
from progress.reaper import WORKER_LOST, areap, ensure_started, reap
from progress.recorder import claim
from progress.schemas import ErrorMessage, SnapshotMessage, utcnow
from tests.conftest import receive, watching
from tests.processes import PYTHON, ROOT, manage, migrate, project_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def started(task_id: str, quiet_for: float) -> None:
    """A task whose job started and last heartbeat ``quiet_for`` seconds ago."""
    report_progress(task_id, "queued", 0)
    assert claim(task_id, 1) is not None
    Task.objects.filter(pk=task_id).update(heartbeat_at=utcnow() - timedelta(seconds=quiet_for))


def test_reaper_fails_a_quiet_job():
    started("job1", quiet_for=10)
    assert reap(stale_after=5) == ["job1"]
    task = Task.objects.get(pk="job1")
    assert (task.status, task.error_code) == ("failed", WORKER_LOST)
    assert "attempt 1" in (task.technical_detail or "")


def test_reaper_leaves_a_live_job():
    started("job1", quiet_for=1)
    assert reap(stale_after=5) == []
    assert Task.objects.get(pk="job1").status == "running"


def test_reaper_leaves_a_queued_task():
    report_progress("job1", "queued", 0)
    Task.objects.filter(pk="job1").update(updated_at=utcnow() - timedelta(hours=1))
    assert reap(stale_after=5) == []
    assert Task.objects.get(pk="job1").status == "running"


def test_reaper_fails_a_task_once():
    started("job1", quiet_for=10)
    assert reap(stale_after=5) == ["job1"]
    assert reap(stale_after=5) == []
    assert Task.objects.get(pk="job1").seq == 2  # queued, then the one error


def test_reaper_spares_a_retried_task_until_its_new_job_goes_quiet():
    started("job1", quiet_for=10)
    reap(stale_after=5)
    assert restart_task("job1") == 2
    assert reap(stale_after=5) == []
    assert claim("job1", 2) is not None
    Task.objects.filter(pk="job1").update(heartbeat_at=utcnow() - timedelta(seconds=10))
    assert reap(stale_after=5) == ["job1"]
    assert Task.objects.get(pk="job1").attempt == 2


async def test_reaper_async_twin_fails_a_quiet_job():
    await sync_to_async(started)("job1", 10)
    assert await areap(stale_after=5) == ["job1"]


async def test_reaper_on_the_server_loop_tells_watchers(settings):
    settings.PROGRESS = {
        **settings.PROGRESS,
        "MAX_UPDATES_PER_SECOND": 0,
        "HEARTBEAT_INTERVAL": 3600,
        "STALE_AFTER": 0.4,
    }
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        assert isinstance(await receive(client), SnapshotMessage)
        assert await sync_to_async(claim)("job1", 1) is not None
        ensure_started()
        ensure_started()
        assert len([t for t in asyncio.all_tasks() if t.get_name() == "progress-reaper"]) == 1
        error = await receive(client, timeout=10)
        assert isinstance(error, ErrorMessage)
        assert (error.error_code, error.attempt) == (WORKER_LOST, 1)
    reaper_module._loop_tasks.pop(asyncio.get_running_loop()).cancel()


REAPER_PROCESS = """
import django, time
django.setup()
from progress.reaper import start_thread
assert start_thread() and not start_thread()
time.sleep(60)
"""


def test_reaper_thread_fails_quiet_jobs_in_a_process_without_a_server(tmp_path):
    """What each Celery worker runs (worker_ready): the only reaper a deployment without servers up needs."""
    env = project_env(tmp_path, PROGRESS_STALE_AFTER="0.4")
    migrate(env)
    script = "from progress import report_progress; from progress.recorder import claim; "
    script += "report_progress('job1', 'queued', 0); assert claim('job1', 1)"
    manage(["shell", "-v", "0", "-c", script], env)
    process = subprocess.Popen([PYTHON, "-c", REAPER_PROCESS], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        check = "from progress.models import Task; print(Task.objects.get(pk='job1').error_code)"
        deadline = time.monotonic() + 30
        while (code := manage(["shell", "-v", "0", "-c", check], env).strip()) == "None":
            assert time.monotonic() < deadline, "the reaper thread failed nothing"
            time.sleep(0.2)
        assert code == WORKER_LOST
    finally:
        process.kill()
        process.wait()
