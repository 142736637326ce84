"""The task row's read-modify-write path: lock() loads what it is asked for, write() stores only that."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction

from progress import rows
from progress.models import Task
from progress.schemas import utcnow

pytestmark = pytest.mark.django_db(transaction=True)


def make(task_id: str = "job1") -> Task:
    now = utcnow()
    return Task.objects.create(task_id=task_id, stage="queued", created_at=now, updated_at=now, message="hi")


def test_rows_lock_absent_is_none():
    with transaction.atomic():
        assert rows.lock("nope", ("seq",)) is None


def test_rows_lock_loads_only_the_fields_asked():
    make()
    with transaction.atomic():
        task = rows.lock("job1", ("seq", "stage"))
    assert task is not None
    assert (task.task_id, task.seq, task.stage) == ("job1", 0, "queued")
    assert "message" in task.get_deferred_fields()
    assert "seq" not in task.get_deferred_fields()


def test_rows_lock_datetime_field_is_converted():
    created = make()
    with transaction.atomic():
        task = rows.lock("job1", ("updated_at",))
    assert task is not None
    assert task.updated_at == created.updated_at
    assert task.updated_at.tzinfo is not None


def test_rows_write_stores_only_the_named_fields():
    make()
    later = utcnow() + timedelta(seconds=5)
    with transaction.atomic():
        task = rows.lock("job1", ("seq", "stage", "message"))
        assert task is not None
        task.seq, task.stage, task.message = 7, "transcribing", "changed but not written"
        task.heartbeat_at = later
        rows.write(task, ("seq", "stage", "heartbeat_at"))
    stored = Task.objects.get(pk="job1")
    assert (stored.seq, stored.stage, stored.message) == (7, "transcribing", "hi")
    assert stored.heartbeat_at == later


def test_rows_write_none_clears_a_nullable_field():
    make()
    with transaction.atomic():
        task = rows.lock("job1", ("message",))
        assert task is not None
        task.message = None
        rows.write(task, ("message",))
    assert Task.objects.get(pk="job1").message is None


def test_rows_write_leaves_other_tasks_alone():
    make("job1")
    make("job2")
    with transaction.atomic():
        task = rows.lock("job1", ("seq",))
        assert task is not None
        task.seq = 3
        rows.write(task, ("seq",))
    assert dict(Task.objects.values_list("task_id", "seq")) == {"job1": 3, "job2": 0}


def test_rows_statements_built_once_per_field_list():
    make()
    rows._select.cache_clear()
    with transaction.atomic():
        rows.lock("job1", ("seq",))
        rows.lock("job1", ("seq",))
        rows.lock("job1", ("stage",))
    assert rows._select.cache_info().misses == 2
