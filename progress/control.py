"""What an owner does to a task besides watching it: cancel it, or delete it and everything of it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import transaction

from . import store
from .delivery import deliver
from .loops import loop_for_sync_caller
from .models import Task, Tombstone
from .places import announce
from .publish import _forbid_running_loop, _publish_async, _publish_sync
from .schemas import utcnow
from .signals import task_deleted
from .state import Verdict

__all__ = ["acancel_task", "adelete_task", "cancel_task", "delete_task"]

log = logging.getLogger("progress")


def cancel_task(task_id: str) -> bool:
    """Cancel a waiting or running task: every watcher is told (``cancelled``), a waiting job never
    starts, a running one stops at its next check; True if this ended it. Never raises."""
    _forbid_running_loop("cancel_task")
    outcome = _publish_sync(task_id, lambda: store.record_cancel(task_id))
    if outcome is not None and outcome.accepted:
        announce()  # a waiting task left the line, or a running one freed its worker
        return True
    return False


async def acancel_task(task_id: str) -> bool:
    """Async twin of cancel_task."""
    outcome = await _publish_async(task_id, lambda: store.record_cancel(task_id))
    if outcome is not None and outcome.accepted:
        await sync_to_async(announce, thread_sensitive=False)()
        return True
    return False


def _gone(task_id: str) -> store.Outcome:
    """The group message that closes every watcher of a deleted task with 4404."""
    message = store.GroupMessage(
        type="task.deleted", task_id=task_id, seq=0, prev_seq=0, final=True, text="", at=time.time()
    )
    return store.Outcome(Verdict.FINAL, 0, message)


TOMBSTONE_DAYS = 7
"""Days a deleted task's tombstone is kept: longer than any job or upload outlives its cancel."""


def _delete_rows(task_id: str) -> bool:
    if not Task.objects.filter(pk=task_id).exists():
        return False
    # Whoever holds the task's data (files, results) deletes it first; if that fails, the task stays.
    task_deleted.send(sender=Task, task_id=task_id)
    now = utcnow()
    with transaction.atomic():
        Tombstone.objects.get_or_create(digest=store.tombstone_digest(task_id), defaults={"deleted_at": now})
        Task.objects.filter(pk=task_id).delete()  # its events with it
    Tombstone.objects.filter(deleted_at__lt=now - timedelta(days=TOMBSTONE_DAYS)).delete()
    log.info("progress: task %s deleted", task_id)
    return True


def delete_task(task_id: str) -> bool:
    """Delete a task and everything of it: cancelled first if it runs, then ``task_deleted`` asks the
    app that holds its data to delete that, then its row and events go and its watchers are closed
    with 4404. Afterwards it answers everyone as a task that never existed. False if there was none."""
    _forbid_running_loop("delete_task")
    cancel_task(task_id)
    if not _delete_rows(task_id):
        return False
    deliver(_gone(task_id), loop_for_sync_caller(), task_id)
    return True


async def adelete_task(task_id: str) -> bool:
    """Async twin of delete_task."""
    await acancel_task(task_id)
    if not await sync_to_async(_delete_rows, thread_sensitive=False)(task_id):
        return False
    deliver(_gone(task_id), asyncio.get_running_loop(), task_id)
    return True
