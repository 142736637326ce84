"""The heartbeat's check for missed frames: one shared read of a task's newest seq per process."""

from __future__ import annotations

import asyncio
import weakref

from channels.db import database_sync_to_async

from .conf import get_settings


def _task_seq(task_id: str) -> int:
    """The task's newest seq; -1 when it no longer exists (deleted)."""
    from .models import Task

    seq = Task.objects.filter(pk=task_id).values_list("seq", flat=True).first()
    return -1 if seq is None else seq


# Per loop: task id -> the read of its newest seq that heartbeats in this process share. One read
# per watcher queued on Django's one thread-sensitive worker and made heartbeats late.
_seq_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[int]]] = (
    weakref.WeakKeyDictionary()
)


def newest_seq(task_id: str) -> asyncio.Task[int]:
    """The read of the task's newest seq, made at most once per half heartbeat interval per process."""
    loop = asyncio.get_running_loop()
    reads = _seq_reads.setdefault(loop, {})
    read = reads.get(task_id)
    if read is None:
        read = reads[task_id] = loop.create_task(database_sync_to_async(_task_seq)(task_id))
        loop.call_later(get_settings().HEARTBEAT_INTERVAL / 2, reads.pop, task_id, None)
    return read
