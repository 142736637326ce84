"""Fan-out: each process sends its group messages in order from one event loop, never blocking producers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from channels.layers import get_channel_layer

from . import metrics, store
from .conf import get_settings
from .extensions import has_extension
from .loops import PerLoop
from .store import GroupMessage

log = logging.getLogger("progress")

_BATCH = 200
"""Messages sent in one go when several are waiting: one Redis round trip with a layer that batches."""
_BUSY = 0.01
"""The sender lingers only when its last batch left less than this many seconds ago: reports come fast."""


class Sender:
    """Sends one process's group messages in order from one loop: queue, then layer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[GroupMessage] = asyncio.Queue(get_settings().PUBLISH_QUEUE_SIZE)
        self.task: asyncio.Task[None] | None = None
        self.unsent = 0
        self.dropped = 0
        self.batches = 0
        # Messages handed over by other threads. The loop is woken only when the sender sleeps: while
        # it sends or lingers, reports pile up and leave in one batch (a wake-up per report cost a
        # worker more CPU than its database write).
        self.incoming: deque[GroupMessage] = deque()
        self.wake_lock = threading.Lock()
        self.awake = False

    def hand_over(self, message: GroupMessage) -> None:
        """Pass a message to the loop from another thread."""
        self.incoming.append(message)
        with self.wake_lock:
            if self.awake:
                return
            self.awake = True
        self.loop.call_soon_threadsafe(self._take_incoming)

    def _take_incoming(self) -> None:
        """Move handed-over messages to the queue; go back to sleep if there is nothing to send."""
        while True:
            self._drain_incoming()
            if not self.queue.empty():
                return  # _run sends, and takes what arrives meanwhile before it waits again
            with self.wake_lock:
                if not self.incoming:
                    self.awake = False
                    return

    def _drain_incoming(self) -> None:
        while self.incoming:
            self._queue(self.incoming.popleft())

    def put(self, message: GroupMessage) -> None:
        """Queue a message (on the sender's loop) after any handed over before it."""
        self._drain_incoming()
        self._queue(message)

    def _queue(self, message: GroupMessage) -> None:
        """A full queue drops the message, and seqs reveal the gap to watchers."""
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())
        try:
            self.queue.put_nowait(message)
            self.unsent += 1
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.SENDER_DROPPED.inc()
            log.error("progress: publish queue full, dropped seq %s (watchers recover)", message["seq"])

    async def _run(self) -> None:
        failing = False
        last_sent = -1.0
        while True:
            if self.queue.empty():
                self._take_incoming()
            batch = [await self.queue.get()]
            linger = get_settings().PUBLISH_LINGER
            now = self.loop.time()
            if linger > 0 and self.queue.empty() and now - last_sent < _BUSY:
                # Busy: a moment for more to arrive, as a batch costs one wake-up and one Redis
                # round trip. A lone message (a task reporting a few times a second) goes at once.
                await asyncio.sleep(linger)
                self._drain_incoming()
            while len(batch) < _BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.batches += 1
            last_sent = now
            try:
                await _group_send_all(batch)
            except Exception as exc:
                # Watchers catch up from the durable state when the next message or heartbeat shows the gap.
                metrics.LAYER_ERRORS.inc()
                if not failing:
                    log.error("progress: channel layer unavailable, fan-out paused: %r", exc)
                failing = True
            else:
                if failing:
                    log.warning("progress: channel layer reachable again, fan-out resumed")
                failing = False
            finally:
                self.unsent -= len(batch)
                metrics.SENDER_QUEUE.set(self.queue.qsize())
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # Cancelled (the loop is closing) while a layer swallowed the CancelledError (seen
                # with RedisChannelLayer): waiting on the queue again would hang the loop's shutdown.
                raise asyncio.CancelledError

    def pending(self) -> int:
        """Messages handed over, queued or being sent."""
        return len(self.incoming) + self.unsent


async def _group_send_all(batch: list[GroupMessage]) -> None:
    """Send messages in order: in one call when the layer declares it can, else one by one."""
    layer = get_channel_layer()
    if has_extension(layer, "group_send_many"):
        await layer.group_send_many([(store.group_name(m["task_id"]), dict(m)) for m in batch])
        return
    for message in batch:
        await layer.group_send(store.group_name(message["task_id"]), dict(message))


sender = PerLoop(Sender)
"""The sender of a loop (made at first use, from any thread); ``sender.get(loop)``: if it has one."""


def send(message: GroupMessage, loop: asyncio.AbstractEventLoop) -> None:
    """Send ``message`` to its task's group from ``loop``'s sender, called from any thread."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        sender(loop).put(message)
    else:
        sender(loop).hand_over(message)
