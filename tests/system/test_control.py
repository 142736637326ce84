"""Cancel and delete: the store's rules, what watchers see, what a job notices, what is left."""

from __future__ import annotations

import threading

import pytest
from django.apps import apps
from django.db import connection

from progress import (
    acancel_task,
    adelete_task,
    areport_progress,
    arestart_task,
    cancel_task,
    delete_task,
    report_error,
    report_progress,
    restart_task,
    start_task,
)
from progress.models import Task, TaskEvent, Tombstone
from progress.recorder import Job, JobCancelled
from progress.schemas import CancelledMessage, ProgressMessage, SnapshotMessage
from progress.signals import task_deleted
from tests.conftest import quiet, receive, watching

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def rows_naming(task_id: str) -> int:
    """Rows of every table of every installed app that hold ``task_id`` in any text column."""
    found = 0
    with connection.cursor() as cursor:
        for model in apps.get_models():
            table = model._meta.db_table
            for field in model._meta.concrete_fields:
                if field.get_internal_type() in ("CharField", "TextField", "JSONField"):
                    cursor.execute(
                        f'SELECT COUNT(*) FROM "{table}" WHERE "{field.column}" LIKE %s', [f"%{task_id}%"]
                    )
                    found += cursor.fetchone()[0]
    return found


def test_control_cancel_ends_a_running_task_once():
    task_id = start_task("queued", owner="session:a")
    assert cancel_task(task_id)
    assert not cancel_task(task_id)
    task = Task.objects.get(pk=task_id)
    assert task.status == "cancelled"
    last = TaskEvent.objects.filter(task_id=task_id).last()
    assert last is not None
    frame = CancelledMessage.model_validate_json(last.payload)
    assert (frame.seq, frame.attempt) == (task.seq, 1)


def test_control_reports_after_a_cancel_are_ignored():
    task_id = start_task("queued")
    cancel_task(task_id)
    assert not report_progress(task_id, "transcribing", 10, attempt=1)
    assert not report_error(task_id, "boom", "It broke.", attempt=1)
    assert Task.objects.get(pk=task_id).status == "cancelled"


def test_control_an_ended_task_cannot_be_cancelled():
    done = start_task("queued")
    report_progress(done, "complete", 100)
    failed = start_task("queued")
    report_error(failed, "boom", "It broke.")
    assert not cancel_task(done)
    assert not cancel_task(failed)
    assert not cancel_task("no-such-task")
    assert not Task.objects.filter(pk="no-such-task").exists()


def test_control_a_cancelled_task_may_be_retried():
    task_id = start_task("queued")
    cancel_task(task_id)
    assert restart_task(task_id) == 2
    assert (Task.objects.get(pk=task_id).status, Task.objects.get(pk=task_id).stage) == ("running", "queued")


def test_control_job_check_notices_a_cancel_within_its_interval():
    task_id = start_task("queued")
    now = [0.0]
    job = Job(task_id, 1, beat_interval=60, clock=lambda: now[0])
    job.check()
    cancel_task(task_id)
    job.check()  # not read yet: the interval has not passed
    now[0] += 0.25
    with pytest.raises(JobCancelled):
        job.check()
    assert job.cancelled


def test_control_delete_removes_every_row_and_leaves_only_a_digest():
    task_id = start_task("queued", owner="session:a")
    report_progress(task_id, "transcribing", 50)
    asked = []

    def answer(sender: object, task_id: str, **kwargs: object) -> None:
        asked.append(task_id)

    task_deleted.connect(answer)
    try:
        assert delete_task(task_id)
    finally:
        task_deleted.disconnect(answer)
    assert asked == [task_id]
    assert rows_naming(task_id) == 0
    assert Tombstone.objects.count() == 1
    assert not delete_task(task_id)


def test_control_a_late_report_does_not_bring_a_deleted_task_back():
    task_id = start_task("transcribing")
    delete_task(task_id)
    assert not report_progress(task_id, "aligning", 10, attempt=1)
    assert not report_progress(task_id, "aligning", 10)
    assert not report_error(task_id, "worker_lost", "Gone.", attempt=1)
    assert not Task.objects.filter(pk=task_id).exists()


def test_control_delete_is_refused_whole_when_the_app_cannot_delete_its_data():
    task_id = start_task("queued")

    def broken(sender: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    task_deleted.connect(broken)
    try:
        with pytest.raises(OSError, match="disk gone"):
            delete_task(task_id)
    finally:
        task_deleted.disconnect(broken)
    assert Task.objects.filter(pk=task_id).exists()


async def test_control_watchers_get_the_cancel_live_and_late():
    await areport_progress("job1", "transcribing", 40)
    async with watching("/ws/tasks/job1/") as live:
        await receive(live)
        assert await acancel_task("job1")
        frame = await receive(live)
        assert isinstance(frame, CancelledMessage)
        assert await quiet(live, 0.2)  # stays open: the owner may retry
        async with watching("/ws/tasks/job1/") as late:
            snapshot = await receive(late)
            assert isinstance(snapshot, SnapshotMessage)
            assert snapshot.status == "cancelled"
            assert isinstance(await receive(late), CancelledMessage)
            assert await arestart_task("job1") == 2
            for client in (live, late):
                retried = await receive(client)
                assert isinstance(retried, ProgressMessage)
                assert (retried.attempt, retried.stage) == (2, "queued")


async def test_control_delete_closes_every_watcher_with_4404():
    await areport_progress("job1", "transcribing", 40)
    async with watching("/ws/tasks/job1/") as first, watching("/ws/tasks/job1/") as second:
        await receive(first)
        await receive(second)
        assert await adelete_task("job1")
        for client in (first, second):
            assert isinstance(await receive(client), CancelledMessage)  # it was running: cancelled first
            assert (await client.receive_output(3)) == {"type": "websocket.close", "code": 4404}
    async with watching("/ws/tasks/job1/") as again:
        assert (await again.receive_output(3)) == {"type": "websocket.close", "code": 4404}


def test_control_cancel_from_another_thread_stops_a_job_at_its_next_check():
    task_id = start_task("queued")
    job = Job(task_id, 1, beat_interval=60)
    stopped = threading.Event()

    def body() -> None:
        try:
            while True:
                job.check()
        except JobCancelled:
            stopped.set()
        finally:
            connection.close()

    runner = threading.Thread(target=body)
    runner.start()
    cancel_task(task_id)
    assert stopped.wait(5)
    runner.join()
