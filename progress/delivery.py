"""A write's outcome on its way out: its message to the sender, and its coalesced flush on a timer.

Coalescing (progress.state) holds back reports that come faster than MIN_INTERVAL; the store says
when the held state may go (``Outcome.flush_at``), and this module writes and sends it then, once
per task however many reports asked.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time

from . import sender, store
from .conf import get_settings
from .db import db_call
from .loops import PerLoop, alive, own_loop
from .store import Outcome

log = logging.getLogger("progress")


class Flushes:
    """The coalesced flushes scheduled on one loop, at most one per task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled: set[str] = set()
        self.lock = threading.Lock()

    def schedule(self, task_id: str, at: float) -> None:
        """Write and send the task's held state at ``at`` (epoch seconds), once; from any thread."""
        with self.lock:
            if task_id in self.scheduled:
                return
            self.scheduled.add(task_id)
        self.loop.call_soon_threadsafe(self._later, task_id, at)

    def _later(self, task_id: str, at: float) -> None:
        self.loop.call_later(max(0.0, at - time.time()), self._flush, task_id)

    def _flush(self, task_id: str) -> None:
        with self.lock:
            self.scheduled.discard(task_id)
        future = self.loop.run_in_executor(None, db_call, store.flush, task_id, get_settings().min_interval)
        future.add_done_callback(lambda done: self._flushed(task_id, done))

    def _flushed(self, task_id: str, future: asyncio.Future[Outcome | None]) -> None:
        try:
            outcome = future.result()
        except Exception:
            log.exception("progress: could not flush a coalesced update")
            return
        if outcome is not None:
            deliver(outcome, self.loop, task_id)

    def pending(self) -> int:
        """Flushes still scheduled."""
        return len(self.scheduled)


_flushes = PerLoop(Flushes)


def deliver(outcome: Outcome, loop: asyncio.AbstractEventLoop | None, task_id: str) -> None:
    """Send an outcome's message and schedule its flush on ``loop`` (from any thread)."""
    if loop is None:
        return
    if outcome.send is not None:
        sender.send(outcome.send, loop)
    if outcome.flush_at is not None:
        _flushes(loop).schedule(task_id, outcome.flush_at)


def _pending(loop: asyncio.AbstractEventLoop) -> int:
    found, flushes = sender.sender.get(loop), _flushes.get(loop)
    return (found.pending() if found else 0) + (flushes.pending() if flushes else 0)


def _drain_at_exit(timeout: float = 2.0) -> None:
    """Give queued messages a moment to leave before a short-lived process exits."""
    loop = own_loop()
    if loop is None or not alive(loop):
        return
    deadline = time.monotonic() + timeout
    while _pending(loop) and time.monotonic() < deadline:
        time.sleep(0.01)


atexit.register(_drain_at_exit)


def wait_until_sent(timeout: float = 5.0) -> bool:
    """Block until this process's own publisher loop has sent what it queued (scripts, tests)."""
    loop = own_loop()
    if loop is None or not alive(loop):
        return True

    async def idle() -> None:
        while _pending(asyncio.get_running_loop()):  # noqa: ASYNC110 - a test/script helper, polled
            await asyncio.sleep(0.005)

    try:
        asyncio.run_coroutine_threadsafe(idle(), loop).result(timeout)
    except TimeoutError:
        return False
    return True
