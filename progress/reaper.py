"""Fails running tasks whose job stopped heartbeating: a killed worker cannot report its own death.

It needs no process of its own: every server process runs it as an asyncio task on its loop
(``ensure_started()``, called by the ASGI app), and every worker process as a daemon thread
(``start_thread()``). Running it in many processes at once is safe: the error names the stale
attempt, so only the first report ends the task and the others are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

from . import metrics, store
from .conf import get_settings
from .publish import areport_error, report_error

log = logging.getLogger("progress")

__all__ = ["WORKER_LOST", "areap", "ensure_started", "quiet_limit", "reap", "start_thread"]

WORKER_LOST = "worker_lost"
USER_MESSAGE = "The worker running this job stopped responding, so the job was stopped. You can retry it."


def _detail(attempt: int, stale_after: float) -> str:
    return f"no heartbeat from attempt {attempt} for more than {stale_after:g} s (worker killed or hung)"


def _stale(stale_after: float) -> list[tuple[str, int]]:
    close_old_connections()
    return store.stale_tasks(stale_after)


def quiet_limit() -> float:
    """Seconds without a heartbeat after which a job is dead: three missed beats (jobs beat every
    STALE_AFTER / 4), short enough that with the reaper's own interval a killed worker's watchers
    hear of it within STALE_AFTER."""
    return get_settings().STALE_AFTER * 0.75


def reap(stale_after: float | None = None) -> list[str]:
    """Fail every running task whose job went quiet; the ids this call failed."""
    after = quiet_limit() if stale_after is None else stale_after
    failed = []
    for task_id, attempt in _stale(after):
        if report_error(task_id, WORKER_LOST, USER_MESSAGE, _detail(attempt, after), attempt=attempt):
            log.warning("progress: task %s attempt %s failed: no heartbeat for %gs", task_id, attempt, after)
            metrics.REAPED.inc()
            failed.append(task_id)
    return failed


async def areap(stale_after: float | None = None) -> list[str]:
    """Async twin of reap, for a server's event loop."""
    after = quiet_limit() if stale_after is None else stale_after
    failed = []
    for task_id, attempt in await sync_to_async(_stale, thread_sensitive=False)(after):
        if await areport_error(task_id, WORKER_LOST, USER_MESSAGE, _detail(attempt, after), attempt=attempt):
            log.warning("progress: task %s attempt %s failed: no heartbeat for %gs", task_id, attempt, after)
            metrics.REAPED.inc()
            failed.append(task_id)
    return failed


def interval() -> float:
    """Seconds between two looks: with quiet_limit(), a dead job is failed within 0.95 * STALE_AFTER."""
    return max(0.05, get_settings().STALE_AFTER / 5)


_loop_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def _run_on_loop() -> None:
    while True:
        await asyncio.sleep(interval())
        try:
            await areap()
        except Exception:
            log.exception("progress: reaper could not check for dead jobs")


def ensure_started() -> None:
    """Start the reaper on the running loop unless it runs there already (cheap; call per request)."""
    loop = asyncio.get_running_loop()
    running = _loop_tasks.get(loop)
    if running is None or running.done():
        _loop_tasks[loop] = loop.create_task(_run_on_loop(), name="progress-reaper")


_thread_lock = threading.Lock()
_thread_pid: int | None = None


def _run_in_thread() -> None:
    while True:
        time.sleep(interval())
        try:
            reap()
        except Exception:
            log.exception("progress: reaper could not check for dead jobs")
            connection.close()


def start_thread() -> bool:
    """Start the reaper on a daemon thread in this process, once; True if this call started it."""
    global _thread_pid
    with _thread_lock:
        if _thread_pid == os.getpid():  # a forked child has no thread even though the parent set this
            return False
        _thread_pid = os.getpid()
    threading.Thread(target=_run_in_thread, name="progress-reaper", daemon=True).start()
    return True
