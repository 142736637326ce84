"""The consumer's message loop plumbing: a small inbox its sources put messages into.

Channels' await_many_dispatch made a task and an asyncio.wait() per message per socket (a fifth of
a fan-out's CPU); this keeps its order (one message per source at a time, dispatched in turn).
A source is a long-lived reader task (``read_into``), or a callback that puts messages without one
(a channel layer's sink, the heartbeat timer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Item = tuple[Any, "asyncio.Future[None] | None"]
"""A message and the future its reader waits on until it is dispatched (None: nobody waits)."""

_COMPACT_AT = 64
"""Dispatched items kept at the list's head before it is shortened (a list's pop(0) is O(n))."""


class Inbox:
    """Messages put but not yet dispatched, oldest first (an asyncio.Queue is ~1.5 KB)."""

    __slots__ = ("head", "items", "waiter")

    def __init__(self) -> None:
        self.items: list[Item | None] = []
        self.head = 0
        self.waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.items) - self.head

    def put_nowait(self, item: Item) -> None:
        """Add a message and wake the consumer's loop."""
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def put(self, message: Any) -> None:
        """Add a message that nobody waits on (a layer's sink, a timer)."""
        self.put_nowait((message, None))

    def wait(self) -> asyncio.Future[None]:
        """A future done at the next put: the loop awaits it, with no coroutine frame kept per socket."""
        waiter = self.waiter
        if waiter is None or waiter.done():  # done: cancelled with the loop that awaited it
            waiter = self.waiter = asyncio.get_running_loop().create_future()
        return waiter

    def get_nowait(self) -> Item:
        """The oldest message; the inbox must not be empty."""
        items = self.items
        head = self.head
        item = items[head]
        assert item is not None
        if head + 1 == len(items):
            items.clear()
            self.head = 0
        elif head >= _COMPACT_AT and 2 * head >= len(items):
            del items[: head + 1]
            self.head = 0
        else:
            items[head] = None  # the message is not kept alive by the inbox while it is dispatched
            self.head = head + 1
        return item

    async def get(self) -> Item:
        """The oldest message, waiting for one if there is none."""
        while not self:
            await self.wait()
        return self.get_nowait()


async def read_into(source: Callable[[], Awaitable[dict[str, Any]]], inbox: Inbox) -> None:
    """Hand a source's messages to the consumer's loop, the next only once the last was dispatched."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            message: Any = await source()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised in the consumer's loop, as Channels does
            message = exc
        dispatched: asyncio.Future[None] = loop.create_future()  # made here: none kept while idle
        inbox.put_nowait((message, dispatched))
        await dispatched
