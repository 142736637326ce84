"""Places in line: the estimate alone, then what a waiting task's watchers are told as the line moves."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from progress import acancel_task, areport_progress, report_progress, start_task
from progress.models import Task
from progress.places import estimate_starts, place_of, typical_duration
from progress.queue import claim_next
from progress.schemas import QueueMessage, SnapshotMessage, utcnow
from tests.conftest import receive, watching


def test_places_estimate_without_history_is_unknown():
    assert estimate_starts(3, [5.0], None) == [None, None, None]


def test_places_estimate_with_one_worker_queues_behind_the_running_job():
    assert estimate_starts(3, [4.0], 10.0) == [6.0, 16.0, 26.0]


def test_places_estimate_with_two_workers_takes_whichever_frees_first():
    assert estimate_starts(4, [9.0, 1.0], 10.0) == [1.0, 9.0, 11.0, 19.0]


def test_places_estimate_of_a_job_past_its_usual_length_is_now():
    assert estimate_starts(1, [30.0], 10.0) == [0.0]


@pytest.mark.django_db
def test_places_typical_duration_is_the_mean_of_recent_jobs():
    assert typical_duration() is None
    now = utcnow()
    for seconds in (10, 20):
        task_id = start_task("queued")
        report_progress(task_id, "complete", 100)
        Task.objects.filter(pk=task_id).update(started_at=now - timedelta(seconds=seconds), updated_at=now)
    assert typical_duration() == pytest.approx(15)


@pytest.mark.django_db
def test_places_place_of_counts_only_the_tasks_ahead():
    first, second = start_task("queued", owner="session:a"), start_task("queued", owner="session:a")
    assert place_of(first) == (0, None)
    assert place_of(second) == (1, None)
    claim_next()
    assert place_of(first) is None  # started: no longer waiting
    assert place_of(second) == (0, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_progress")
async def test_places_watchers_see_their_place_fall_as_jobs_start():
    from asgiref.sync import sync_to_async

    ids = [await sync_to_async(start_task)("queued", owner="session:a") for _ in range(5)]
    last = ids[-1]
    async with watching(f"/ws/tasks/{last}/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        assert snapshot.queue_position == 4
        seen: list[int] = []
        for _ in range(4):
            job = await sync_to_async(claim_next)()
            assert job is not None
            message = await receive(client, places=True)
            while isinstance(message, QueueMessage) and message.queue_position == (seen or [4])[-1]:
                message = await receive(client, places=True)  # an earlier announcement, unchanged
            assert isinstance(message, QueueMessage)
            seen.append(message.queue_position)
            await areport_progress(job.task_id, "complete", 100, attempt=job.attempt)
        assert seen == [3, 2, 1, 0]
        await acancel_task(last)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_progress")
async def test_places_a_cancel_ahead_moves_the_line_up():
    from asgiref.sync import sync_to_async

    ahead = await sync_to_async(start_task)("queued", owner="session:a")
    behind = await sync_to_async(start_task)("queued", owner="session:a")
    async with watching(f"/ws/tasks/{behind}/") as client:
        assert (await receive(client)).queue_position == 1  # type: ignore[union-attr]
        await acancel_task(ahead)
        message = await receive(client, places=True)
        while isinstance(message, QueueMessage) and message.queue_position == 1:
            message = await receive(client, places=True)
        assert isinstance(message, QueueMessage)
        assert message.queue_position == 0


def test_places_a_burst_of_changes_is_announced_now_and_once_at_its_end(monkeypatch):
    import threading

    from progress import places

    told: list[float] = []
    trailing = threading.Event()
    now = [100.0]

    def counted() -> None:
        told.append(now[0])
        if len(told) == 2:
            trailing.set()

    monkeypatch.setattr(places, "_announce", counted)
    monkeypatch.setattr(places, "_read_places", dict)
    line = places._Line(clock=lambda: now[0])
    line.changed()  # the first change is told at once
    for _ in range(5):
        line.changed()  # the rest of the burst waits for one trailing announcement
    assert told == [100.0]
    assert trailing.wait(5)
    assert len(told) == 2


def test_places_a_reading_is_reused_until_a_change_or_its_age(monkeypatch):
    from progress import places

    reads: list[int] = []

    def read() -> dict[str, tuple[int, float | None]]:
        reads.append(1)
        return {"t": (0, None)}

    monkeypatch.setattr(places, "_read_places", read)
    monkeypatch.setattr(places, "_announce", lambda: None)
    now = [0.0]
    line = places._Line(clock=lambda: now[0])
    assert line.places() == line.places() == {"t": (0, None)}
    assert len(reads) == 1
    now[0] += places.MAX_AGE
    line.places()
    assert len(reads) == 2
    line.changed()
    line.places()
    assert len(reads) == 3


def test_places_threads_that_ask_during_a_read_share_it(monkeypatch):
    from progress import places

    reads: list[int] = []
    release = threading.Event()

    def read() -> dict[str, tuple[int, float | None]]:
        reads.append(1)
        release.wait(5)
        return {"t": (0, None)}

    monkeypatch.setattr(places, "_read_places", read)
    line = places._Line(clock=lambda: 0.0)
    got: list[dict[str, tuple[int, float | None]]] = []
    threads = [threading.Thread(target=lambda: got.append(line.places())) for _ in range(8)]
    for thread in threads:
        thread.start()
    while not reads:
        release.wait(0.01)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(reads) == 1
    assert got == [{"t": (0, None)}] * 8


def test_places_a_read_begun_before_a_change_is_not_kept(monkeypatch):
    from progress import places

    line = places._Line(clock=lambda: 0.0)
    monkeypatch.setattr(places, "_announce", lambda: None)
    calls: list[int] = []

    def read() -> dict[str, tuple[int, float | None]]:
        calls.append(1)
        if len(calls) == 1:
            line.changed()  # a claim lands while the first read runs
        return {"t": (len(calls), None)}

    monkeypatch.setattr(places, "_read_places", read)
    assert line.places() == {"t": (1, None)}
    assert line.places() == {"t": (2, None)}
    assert line.places() == {"t": (2, None)}


def test_places_news_tells_only_what_moved():
    from progress import places

    line = places._Line(clock=lambda: 0.0)
    first = {"a": (0, 10.0), "b": (1, 70.0)}
    assert places.news(line, first) == first  # nothing told yet
    assert places.news(line, {**first, "c": (2, 130.0)}) == {"c": (2, 130.0)}  # joined at the end
    assert places.news(line, {"a": (0, 12.0), "b": (1, 70.0), "c": (2, 130.0)}) == {}  # within a step
    moved = {"b": (0, 0.0), "c": (1, 60.0)}  # a left: the rest move up
    assert places.news(line, moved) == moved
    assert places.news(line, {"a": (2, 120.0), **moved}) == {"a": (2, 120.0)}  # a rejoined: told again
