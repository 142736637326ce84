"""The consumer's message loop plumbing: one long-lived reader per source, feeding a small inbox.

Channels' await_many_dispatch made a task and an asyncio.wait() per message per socket (a fifth of
a fan-out's CPU); this keeps its order (one message per source at a time, dispatched in turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class Inbox:
    """Messages read but not yet dispatched: at most one per source (an asyncio.Queue is ~1.5 KB)."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[tuple[Any, asyncio.Future[None]]] = []
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: tuple[Any, asyncio.Future[None]]) -> None:
        """Add a message and wake the consumer's loop."""
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> tuple[Any, asyncio.Future[None]]:
        """The oldest message, waiting for one if there is none."""
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


async def read_into(source: Callable[[], Awaitable[dict[str, Any]]], inbox: Inbox) -> None:
    """Hand a source's messages to the consumer's loop, the next only once the last was dispatched."""
    loop = asyncio.get_running_loop()
    while True:
        dispatched: asyncio.Future[None] = loop.create_future()
        try:
            message: Any = await source()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised in the consumer's loop, as Channels does
            message = exc
        inbox.put_nowait((message, dispatched))
        await dispatched
