"""The consumer's inbox: oldest first, woken by a put, and readers that wait for their dispatch."""

from __future__ import annotations

import asyncio

import pytest

from progress.inbox import Inbox, Item, read_into


async def take(inbox: Inbox) -> Item:
    """The oldest message, waiting for one as the consumer's loop does."""
    while not inbox:
        await inbox.wait()
    return inbox.get_nowait()


async def test_inbox_take_returns_oldest_first():
    inbox = Inbox()
    for n in range(3):
        inbox.put({"n": n})
    got = [await take(inbox) for _ in range(3)]
    assert got == [({"n": 0}, None), ({"n": 1}, None), ({"n": 2}, None)]
    assert len(inbox) == 0


async def test_inbox_wait_wakes_on_a_put():
    inbox = Inbox()
    getting = asyncio.create_task(take(inbox))
    await asyncio.sleep(0)
    assert not getting.done()
    asyncio.get_running_loop().call_soon(inbox.put, "late")
    assert await asyncio.wait_for(getting, 1) == ("late", None)


async def test_inbox_keeps_order_over_a_long_backlog():
    inbox = Inbox()
    got = []
    for n in range(1000):
        inbox.put(n)
        if n % 3 == 0:  # the consumer falls behind: the head is compacted on the way
            got.append((await take(inbox))[0])
    while len(inbox):
        got.append((await take(inbox))[0])
    assert got == list(range(1000))
    assert inbox.items == []
    assert inbox.head == 0


async def test_inbox_does_not_keep_a_dispatched_message():
    inbox = Inbox()
    inbox.put("first")
    inbox.put("second")
    await take(inbox)
    assert "first" not in [item and item[0] for item in inbox.items]


async def test_inbox_read_into_reads_the_next_only_after_dispatch():
    inbox = Inbox()
    source: asyncio.Queue[dict[str, int]] = asyncio.Queue()
    for n in range(3):
        source.put_nowait({"n": n})
    reader = asyncio.create_task(read_into(source.get, inbox))
    try:
        message, dispatched = await take(inbox)
        await asyncio.sleep(0.05)
        assert message == {"n": 0}
        assert len(inbox) == 0
        assert source.qsize() == 2
        assert dispatched is not None
        dispatched.set_result(None)
        message, _ = await asyncio.wait_for(take(inbox), 1)
        assert message == {"n": 1}
    finally:
        reader.cancel()


async def test_inbox_read_into_passes_a_source_error_on():
    inbox = Inbox()

    async def failing() -> dict[str, int]:
        raise ConnectionError("gone")

    reader = asyncio.create_task(read_into(failing, inbox))
    try:
        error, _ = await asyncio.wait_for(take(inbox), 1)
        assert isinstance(error, ConnectionError)
    finally:
        reader.cancel()


async def test_inbox_wait_is_done_at_the_next_put():
    inbox = Inbox()
    waiter = inbox.wait()
    assert inbox.wait() is waiter
    assert not waiter.done()
    inbox.put("x")
    assert waiter.done()
    assert inbox.get_nowait() == ("x", None)


async def test_inbox_wait_after_a_cancelled_wait_is_a_new_future():
    inbox = Inbox()
    waiting = asyncio.create_task(asyncio.wait_for(inbox.wait(), 0.01))
    with pytest.raises(TimeoutError):
        await waiting
    again = inbox.wait()
    assert not again.done()
    inbox.put("x")
    await asyncio.wait_for(again, 1)
    assert again.done()
