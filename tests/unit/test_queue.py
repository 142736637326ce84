"""The fair queue: the order rule alone, then claims against the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from progress import report_progress, start_task
from progress.models import Task
from progress.queue import Waiting, claim_next, fair_order, waiting

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def task(task_id: str, owner: str, second: int) -> Waiting:
    return Waiting(task_id, 1, owner, T0 + timedelta(seconds=second))


def ids(order: list[Waiting]) -> list[str]:
    return [w.task_id for w in order]


def test_fair_order_is_arrival_order_for_one_owner():
    assert ids(fair_order([task("b", "A", 2), task("a", "A", 1), task("c", "A", 3)], {})) == ["a", "b", "c"]


def test_fair_order_puts_a_newcomer_after_one_task_of_the_busy_owner():
    many = [task(f"a{i:02}", "A", i) for i in range(20)]
    order = ids(fair_order([*many, task("b", "B", 100)], {}))
    assert order.index("b") == 1  # after A's first, not after all 20


def test_fair_order_counts_running_jobs():
    many = [task(f"a{i}", "A", i) for i in range(3)]
    assert ids(fair_order([*many, task("b", "B", 100)], {"A": 2}))[0] == "b"


def test_fair_order_interleaves_owners_round_robin():
    tasks = [task(f"a{i}", "A", i) for i in range(3)] + [task(f"b{i}", "B", 10 + i) for i in range(3)]
    assert ids(fair_order(tasks, {})) == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_fair_order_of_nothing_is_empty():
    assert fair_order([], {"A": 3}) == []


@pytest.mark.django_db
def test_queue_waiting_skips_reservations_and_claimed_tasks():
    queued = start_task("queued", owner="session:a")
    start_task("uploading", owner="session:a")
    claimed = start_task("queued", owner="session:a")
    Task.objects.filter(pk=claimed).update(heartbeat_at=T0)
    assert [w.task_id for w in waiting()] == [queued]


@pytest.mark.django_db
def test_queue_claim_next_serves_the_second_owner_after_one_job():
    first = [start_task("queued", owner="session:a") for _ in range(20)]
    late = start_task("queued", owner="session:b")
    started = []
    for _ in range(3):
        job = claim_next()
        assert job is not None
        started.append(job.task_id)
        report_progress(job.task_id, "complete", 100, attempt=job.attempt)
    assert started == [first[0], late, first[1]]


@pytest.mark.django_db
def test_queue_claim_next_with_nothing_waiting_is_none():
    start_task("uploading", owner="session:a")
    assert claim_next() is None


def test_fair_order_serves_first_who_started_least_recently():
    tasks = [task("a1", "A", 1), task("b1", "B", 2)]
    assert ids(fair_order(tasks, {}, {"A": T0 + timedelta(seconds=50)})) == ["b1", "a1"]
    assert ids(fair_order(tasks, {}, {"A": T0, "B": T0 + timedelta(seconds=5)})) == ["a1", "b1"]
