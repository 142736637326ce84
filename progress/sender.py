"""Fan-out: each process sends its group messages in order from one event loop, never blocking producers.

In the server process that loop is the server's; elsewhere (a Celery worker, a script) it is a
loop on a daemon thread, so sync producers never need ``async_to_sync`` per call.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from . import metrics, store
from .conf import get_settings
from .extensions import has_extension
from .store import GroupMessage, Outcome

log = logging.getLogger("progress")

_server_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_loop_lock = threading.Lock()
_warned_in_memory = False


def bind_server_loop() -> None:
    """Remember the server's event loop, so sync producers in this process fan out on it."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def _alive(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is not None and not loop.is_closed() and loop.is_running()


def _start_own_loop() -> asyncio.AbstractEventLoop:
    """A loop on a daemon thread for processes without a server (Celery workers, scripts)."""
    global _own_loop
    with _own_loop_lock:
        if _own_loop is None or _own_loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()
            loop.call_soon(started.set)
            threading.Thread(target=loop.run_forever, name="progress-publisher", daemon=True).start()
            started.wait()
            _own_loop = loop
        return _own_loop


def _forget_loops_after_fork() -> None:
    # A forked child (a Celery prefork worker) inherits the loop objects but not their threads.
    global _own_loop, _server_loop, _own_loop_lock
    _own_loop = _server_loop = None
    _own_loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loops_after_fork)


def loop_for_sync_caller() -> asyncio.AbstractEventLoop | None:
    """The loop that fans out for a sync caller, or None when nobody could receive."""
    global _warned_in_memory
    if _alive(_server_loop):
        return _server_loop
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        if not _warned_in_memory:
            _warned_in_memory = True
            log.warning(
                "progress: publishing from a process that is not the server with the in-memory "
                "channel layer; state is stored but no watcher receives it live (set REDIS_URL)"
            )
        return None
    return _start_own_loop()


class _Sender:
    """Sends one process's group messages in order from one loop, never blocking producers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[GroupMessage] = asyncio.Queue(get_settings().PUBLISH_QUEUE_SIZE)
        self.flushing: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.unsent = 0
        self.dropped = 0
        self.batches = 0
        # Outcomes handed over by other threads. The loop is woken only when the sender sleeps: while
        # it sends or lingers, reports pile up and leave in one batch (a wake-up per report cost a
        # worker more CPU than its database write).
        self.incoming: deque[tuple[Outcome, str]] = deque()
        self.wake_lock = threading.Lock()
        self.awake = False

    def hand_over(self, outcome: Outcome, task_id: str) -> None:
        """Pass an outcome to the loop from another thread."""
        self.incoming.append((outcome, task_id))
        with self.wake_lock:
            if self.awake:
                return
            self.awake = True
        self.loop.call_soon_threadsafe(self._take_incoming)

    def _take_incoming(self) -> None:
        """Move handed-over outcomes to the queue; go back to sleep if there is nothing to send."""
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
            self.accept(*self.incoming.popleft())

    def accept(self, outcome: Outcome, task_id: str) -> None:
        """Queue an outcome's message and schedule its flush (on the sender's loop)."""
        if outcome.send is not None:
            self.put(outcome.send)
        if outcome.flush_at is not None:
            self.schedule_flush(task_id, outcome.flush_at)

    def put(self, message: GroupMessage) -> None:
        """Queue a message (on the sender's loop); a full queue drops it, and seqs reveal the gap."""
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())
        try:
            self.queue.put_nowait(message)
            self.unsent += 1
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.SENDER_DROPPED.inc()
            log.error("progress: publish queue full, dropped seq %s (watchers recover)", message["seq"])

    def schedule_flush(self, task_id: str, at: float) -> None:
        """Send the coalesced state of a task at ``at`` (epoch seconds), once."""
        if task_id in self.flushing:
            return
        self.flushing.add(task_id)
        self.loop.call_later(max(0.0, at - time.time()), self._flush, task_id)

    def _flush(self, task_id: str) -> None:
        self.flushing.discard(task_id)
        future = self.loop.run_in_executor(None, db_call, store.flush, task_id, get_settings().min_interval)
        future.add_done_callback(lambda done: self._flushed(task_id, done))

    def _flushed(self, task_id: str, future: asyncio.Future[Outcome | None]) -> None:
        try:
            outcome = future.result()
        except Exception:
            log.exception("progress: could not flush a coalesced update")
            return
        if outcome is not None:
            self.accept(outcome, task_id)

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
        """Messages handed over, queued or being sent, and flushes still scheduled."""
        return len(self.incoming) + self.unsent + len(self.flushing)


# Messages sent in one go when several are waiting: one Redis round trip with a layer that batches.
_BATCH = 200
# The sender lingers only when its last batch left less than this many seconds ago: reports come fast.
_BUSY = 0.01


async def _group_send_all(batch: list[GroupMessage]) -> None:
    """Send messages in order: in one call when the layer declares it can, else one by one."""
    layer = get_channel_layer()
    if has_extension(layer, "group_send_many"):
        await layer.group_send_many([(store.group_name(m["task_id"]), dict(m)) for m in batch])
        return
    for message in batch:
        await layer.group_send(store.group_name(message["task_id"]), dict(message))


_senders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sender] = weakref.WeakKeyDictionary()
_senders_lock = threading.Lock()


def _sender(loop: asyncio.AbstractEventLoop) -> _Sender:
    sender = _senders.get(loop)
    if sender is None:
        with _senders_lock:
            sender = _senders.get(loop)
            if sender is None:
                sender = _senders[loop] = _Sender(loop)
    return sender


def deliver(outcome: Outcome, loop: asyncio.AbstractEventLoop | None, task_id: str) -> None:
    """Hand an outcome's message and flush to the sender on ``loop`` (from any thread)."""
    if loop is None or (outcome.send is None and outcome.flush_at is None):
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _sender(loop).accept(outcome, task_id)
    else:
        _sender(loop).hand_over(outcome, task_id)


def db_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store function in a worker thread, closing connections Django considers stale."""
    from django.db import close_old_connections

    close_old_connections()
    return fn(*args, **kwargs)


def _drain_at_exit(timeout: float = 2.0) -> None:
    """Give queued messages a moment to leave before a short-lived process exits."""
    loop = _own_loop
    if not _alive(loop):
        return
    assert loop is not None
    sender = _senders.get(loop)
    deadline = time.monotonic() + timeout
    while sender is not None and sender.pending() and time.monotonic() < deadline:
        time.sleep(0.01)


atexit.register(_drain_at_exit)


def wait_until_sent(timeout: float = 5.0) -> bool:
    """Block until this process's own publisher loop has sent what it queued (scripts, tests)."""
    loop = _own_loop
    if not _alive(loop):
        return True
    assert loop is not None

    async def idle() -> None:
        sender = _senders.get(asyncio.get_running_loop())
        while sender is not None and sender.pending():  # noqa: ASYNC110 - a test/script helper, polled
            await asyncio.sleep(0.005)

    try:
        asyncio.run_coroutine_threadsafe(idle(), loop).result(timeout)
    except TimeoutError:
        return False
    return True
