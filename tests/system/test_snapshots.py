"""Kept views (pushing layers): one read per task per process, dropped by any message, same frames."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from progress import areport_progress, snapshots
from progress.schemas import ProgressMessage, SnapshotMessage
from progress.snapshots import Views
from tests.conftest import quiet, receive, watching

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task ids ``snapshots.read_many`` is called with (the database reads), one by one."""
    calls: list[str] = []
    real = snapshots.read_many

    def counted(task_ids: list[str]) -> dict[str, snapshots.View | None]:
        calls.extend(task_ids)
        return real(task_ids)

    monkeypatch.setattr(snapshots, "read_many", counted)
    return calls


async def reported(task_id: str = "job1") -> None:
    await areport_progress(task_id, "queued", 0)
    await areport_progress(task_id, "transcribing", 10)
    await areport_progress(task_id, "transcribing", 20)
    await areport_progress(task_id, "aligning", 30)
    await areport_progress(task_id, "aligning", 40)
    # Fan-out is asynchronous: a message still on its way when a watcher's read runs makes the
    # process distrust that read (rightly), and these tests count reads.
    await asyncio.sleep(0.2)


async def test_snapshots_read_unknown_is_none():
    assert await sync_to_async(snapshots.read)("nobody") is None


async def test_snapshots_view_of_a_running_task():
    await reported()
    view = await sync_to_async(snapshots.read)("job1")
    assert view is not None
    assert (view.seq, view.final, view.terminal) == (5, False, None)
    assert SnapshotMessage.model_validate_json(view.snapshot).seq == 5
    assert [seq for seq, _ in view.after(0)] == sorted(seq for seq, _ in view.after(0))
    assert view.after(5) == []


async def test_snapshots_view_of_finished_task_has_terminal():
    await reported()
    await areport_progress("job1", "complete", 100)
    view = await sync_to_async(snapshots.read)("job1")
    assert view is not None
    assert view.final
    assert view.terminal is not None
    assert ProgressMessage.model_validate_json(view.terminal).stage == "complete"


async def test_snapshots_kept_while_watched_one_read(reads):
    await reported()
    views = Views()
    views.watch("job1")
    got = await asyncio.gather(*(views.get("job1") for _ in range(20)))
    assert reads == ["job1"]
    assert all(view is got[0] for view in got)
    assert await views.get("job1") is got[0]
    assert reads == ["job1"]


async def test_snapshots_not_kept_unwatched(reads):
    await reported()
    views = Views()
    await views.get("job1")
    await views.get("job1")
    assert reads == ["job1", "job1"]


async def test_snapshots_any_message_drops_the_view(reads):
    await reported()
    views = Views()
    views.watch("job1")
    first = await views.get("job1")
    assert first is not None
    assert await views.get("job1") is first
    await areport_progress("job1", "aligning", 50)
    views.seen("job1", first.seq + 1)
    second = await views.get("job1")
    assert second is not None
    assert second.seq == first.seq + 1
    views.seen("job1", 1)  # a lower seq: the task's state was reset; the next read finds out
    assert "job1" not in views.kept
    assert reads == ["job1", "job1"]


async def test_snapshots_message_during_read_not_kept(reads, monkeypatch):
    await reported()
    views = Views()
    views.watch("job1")
    started = asyncio.Event()
    release = asyncio.Event()
    real = snapshots.read_many
    loop = asyncio.get_running_loop()

    def slow(task_ids: list[str]) -> dict[str, snapshots.View | None]:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        return real(task_ids)

    monkeypatch.setattr(snapshots, "read_many", slow)
    reading = asyncio.create_task(views.get("job1"))
    await started.wait()
    views.seen("job1", 99)  # arrived while the read was in flight: the read may predate it
    release.set()
    assert await reading is not None
    assert views.kept == {}
    assert reads == ["job1", "job1"]  # the caller did not trust the shared read, and read again


async def test_snapshots_last_unwatch_drops_the_view():
    await reported()
    views = Views()
    views.watch("job1")
    views.watch("job1")
    await views.get("job1")
    views.unwatch("job1")
    assert "job1" in views.kept
    views.unwatch("job1")
    assert views.kept == {}
    assert views.watchers == {}


@pytest.mark.redis
async def test_snapshots_second_watcher_connects_without_a_read(
    reads, pubsub_layer
):  # kept views need a pushing layer
    await reported()
    async with watching("/ws/tasks/job1/") as first:
        assert isinstance(await receive(first), SnapshotMessage)
        async with watching("/ws/tasks/job1/") as second:
            snapshot = await receive(second)
            assert isinstance(snapshot, SnapshotMessage)
            assert snapshot.seq == 5
            await areport_progress("job1", "aligning", 60)
            for client in (first, second):
                live = await receive(client)
                assert isinstance(live, ProgressMessage)
                assert live.seq == 6
    assert reads == ["job1"]


@pytest.mark.redis
async def test_snapshots_resume_from_the_kept_view(reads, pubsub_layer):
    await reported()
    async with watching("/ws/tasks/job1/") as first:
        await receive(first)
        async with watching("/ws/tasks/job1/?last_seq=2") as resumed:
            got: list[Any] = [await receive(resumed) for _ in range(2)]
            assert [m.seq for m in got] == [4, 5]  # the stage change to aligning, then the latest
            assert await quiet(resumed, 0.2)
    assert reads == ["job1"]


@pytest.mark.redis
async def test_snapshots_resume_ahead_of_the_view_reads_afresh(
    reads, pubsub_layer
):  # kept views need a pushing layer
    await reported()
    async with watching("/ws/tasks/job1/") as first:
        await receive(first)
        async with watching("/ws/tasks/job1/?last_seq=5") as resumed:
            assert await quiet(resumed, 0.2)
        async with watching("/ws/tasks/job1/?last_seq=9") as ahead:
            got = [await receive(ahead), await receive(ahead)]
            snapshot = got[-1]
            assert isinstance(snapshot, SnapshotMessage)  # after the protocol error that says why
            assert snapshot.seq == 5
    assert reads == ["job1", "job1"]


async def test_snapshots_pulled_layer_reads_per_socket(reads):
    # The in-memory layer hands each consumer its messages when that consumer reads them: the
    # process cannot tell when a message arrived, so nothing is kept.
    await reported()
    async with watching("/ws/tasks/job1/") as first:
        await receive(first)
        async with watching("/ws/tasks/job1/") as second:
            await receive(second)
    assert reads == ["job1", "job1"]


async def test_snapshots_reads_asked_together_share_one_batch(monkeypatch):
    for task_id in ("a", "b", "c"):
        await reported(task_id)
    batches: list[list[str]] = []
    real = snapshots.read_many

    def counted(task_ids: list[str]) -> dict[str, snapshots.View | None]:
        batches.append(sorted(task_ids))
        return real(task_ids)

    monkeypatch.setattr(snapshots, "read_many", counted)
    views = Views()
    got = await asyncio.gather(*(views.get(t) for t in ("a", "b", "c", "nobody")))
    assert batches == [["a", "b", "c", "nobody"]]
    alone = [await sync_to_async(snapshots.read)(t) for t in ("a", "b", "c")]
    assert got[:3] == alone  # each as read on its own
    assert got[3] is None
