"""A socket's heartbeat: its slot in the process's timer wheel, and the shared check for missed frames."""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async

from .conf import get_settings
from .inbox import Inbox
from .timers import TimerWheel, resolution_for, wheel

log = logging.getLogger("progress")

TICK = {"type": "heartbeat.tick"}
"""Put into a consumer's inbox by the wheel, so the heartbeat goes out in turn with the rest."""


def _tick(inbox: Inbox) -> None:
    inbox.put(TICK)


class Heartbeat:
    """One socket's heartbeats, on a fixed cadence: a late one must not push every later one back."""

    __slots__ = ("due", "inbox", "slot", "task_id", "wheel")

    def __init__(self, inbox: Inbox, task_id: str) -> None:
        self.inbox = inbox
        self.task_id = task_id
        self.due = 0.0
        self.slot: int | None = None
        self.wheel: TimerWheel[Inbox] | None = None

    @property
    def running(self) -> bool:
        """Whether a tick is due (not stopped)."""
        return self.slot is not None

    def start(self, now: float) -> None:
        """The first tick one interval after ``now`` (loop time)."""
        self.due = now
        self.next()

    def next(self) -> None:
        """Wait for the next tick, one interval after the last was due."""
        interval = get_settings().HEARTBEAT_INTERVAL
        self.due += interval
        self.wheel = wheel(_tick, resolution_for(interval))
        self.slot = self.wheel.add(self.due, self.inbox)

    def check(self, since: float = 0.0) -> None:
        """Read the task's newest seq (a read shared in the process, begun at ``since`` loop time or
        later): it comes back to the inbox as ``heartbeat.checked``, so a slow read holds up nothing."""
        newest_seq(self.task_id, since).add_done_callback(self._checked)

    def _checked(self, read: asyncio.Future[int]) -> None:
        if read.cancelled():
            return
        error = read.exception()
        if error is not None:
            log.error("progress: could not check task %s for missed messages", self.task_id, exc_info=error)
            return
        self.inbox.put({"type": "heartbeat.checked", "seq": read.result()})

    def stop(self) -> None:
        """No more ticks."""
        if self.slot is not None and self.wheel is not None:
            self.wheel.discard(self.slot, self.inbox)
            self.slot = None


def _task_seq(task_id: str) -> int:
    """The task's newest seq; -1 when it no longer exists (deleted)."""
    from .models import Task

    seq = Task.objects.filter(pk=task_id).values_list("seq", flat=True).first()
    return -1 if seq is None else seq


# Per loop: task id -> (when it began, the read of its newest seq) that heartbeats in this process
# share. One read per watcher queued on Django's one thread-sensitive worker and made heartbeats late.
_seq_reads: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[int]]]
] = weakref.WeakKeyDictionary()


def newest_seq(task_id: str, since: float = 0.0) -> asyncio.Task[int]:
    """The read of the task's newest seq, made at most once per half heartbeat interval per process,
    unless the one in hand began before ``since`` (loop time)."""
    loop = asyncio.get_running_loop()
    reads = _seq_reads.setdefault(loop, {})
    held = reads.get(task_id)
    if held is not None and held[0] >= since:
        return held[1]
    began = loop.time()
    read = loop.create_task(database_sync_to_async(_task_seq)(task_id))
    reads[task_id] = (began, read)
    loop.call_later(get_settings().HEARTBEAT_INTERVAL / 2, _forget, reads, task_id, read)
    return read


def _forget(reads: dict[str, tuple[float, asyncio.Task[int]]], task_id: str, read: asyncio.Task[int]) -> None:
    held = reads.get(task_id)
    if held is not None and held[1] is read:  # not a newer read that replaced it
        del reads[task_id]
