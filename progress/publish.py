"""The publishing API: jobs and views report here; it stores, then fans out through the layer."""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from numbers import Real
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from pydantic import ValidationError

from . import store
from .conf import get_settings
from .schemas import ErrorMessage, ProgressMessage, ProgressStage
from .store import GroupMessage, Outcome

log = logging.getLogger("progress")

__all__ = [
    "areport_error",
    "areport_progress",
    "arestart_task",
    "bind_server_loop",
    "report_error",
    "report_progress",
    "restart_task",
]


# --- validation -----------------------------------------------------------------------------


def _check_progress(
    task_id: str, stage: ProgressStage | str, percentage: float, message: str | None
) -> tuple[ProgressStage, int]:
    """Validate a progress report's arguments, raising ValueError at the call site."""
    if isinstance(percentage, bool) or not isinstance(percentage, Real) or not math.isfinite(percentage):
        raise ValueError(f"percentage must be a number from 0 to 100, not {percentage!r}")
    try:
        checked = ProgressMessage(task_id=task_id, stage=stage, percentage=round(percentage), message=message)
    except ValidationError as exc:
        raise ValueError(f"invalid progress report: {_errors(exc)}") from None
    return checked.stage, checked.percentage


def _check_error(task_id: str, error_code: str, user_message: str, technical_detail: str | None) -> None:
    try:
        ErrorMessage(
            task_id=task_id,
            error_code=error_code,
            user_message=user_message,
            technical_detail=technical_detail,
        )
    except ValidationError as exc:
        raise ValueError(f"invalid error report: {_errors(exc)}") from None


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _forbid_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{name}() was called from a running event loop, where it would block it; "
        f"use 'await a{name}(...)' in async code"
    )


# --- fan-out --------------------------------------------------------------------------------

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


def _loop_for_sync_caller() -> asyncio.AbstractEventLoop | None:
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

    def put(self, message: GroupMessage) -> None:
        """Queue a message (on the sender's loop); a full queue drops it, and seqs reveal the gap."""
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())
        try:
            self.queue.put_nowait(message)
            self.unsent += 1
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("progress: publish queue full, dropped seq %s (watchers recover)", message["seq"])

    def schedule_flush(self, task_id: str, at: float) -> None:
        """Send the coalesced state of a task at ``at`` (epoch seconds), once."""
        if task_id in self.flushing:
            return
        self.flushing.add(task_id)
        self.loop.call_later(max(0.0, at - time.time()), self._flush, task_id)

    def _flush(self, task_id: str) -> None:
        self.flushing.discard(task_id)
        future = self.loop.run_in_executor(None, _db_call, store.flush, task_id, _min_interval())
        future.add_done_callback(lambda done: self._flushed(task_id, done))

    def _flushed(self, task_id: str, future: asyncio.Future[Outcome | None]) -> None:
        try:
            outcome = future.result()
        except Exception:
            log.exception("progress: could not flush a coalesced update")
            return
        if outcome is not None and outcome.send is not None:
            self.put(outcome.send)
        if outcome is not None and outcome.flush_at is not None:
            self.schedule_flush(task_id, outcome.flush_at)

    async def _run(self) -> None:
        failing = False
        while True:
            message = await self.queue.get()
            group = store.group_name(message["task_id"])
            try:
                await get_channel_layer().group_send(group, dict(message))
            except Exception as exc:
                # Watchers catch up from the durable state when the next message or heartbeat shows the gap.
                if not failing:
                    log.error("progress: channel layer unavailable, fan-out paused: %r", exc)
                failing = True
            else:
                if failing:
                    log.warning("progress: channel layer reachable again, fan-out resumed")
                failing = False
            finally:
                self.unsent -= 1

    def pending(self) -> int:
        """Messages queued or being sent, and flushes still scheduled."""
        return self.unsent + len(self.flushing)


_senders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sender] = weakref.WeakKeyDictionary()


def _sender(loop: asyncio.AbstractEventLoop) -> _Sender:
    sender = _senders.get(loop)
    if sender is None:
        sender = _senders[loop] = _Sender(loop)
    return sender


def _deliver(outcome: Outcome, loop: asyncio.AbstractEventLoop | None, task_id: str) -> None:
    """Hand an outcome's message and flush to the sender on ``loop`` (from any thread)."""
    if loop is None or (outcome.send is None and outcome.flush_at is None):
        return

    def on_loop() -> None:
        sender = _sender(loop)
        if outcome.send is not None:
            sender.put(outcome.send)
        if outcome.flush_at is not None:
            sender.schedule_flush(task_id, outcome.flush_at)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        on_loop()
    else:
        loop.call_soon_threadsafe(on_loop)


def _db_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store function in a worker thread, closing connections Django considers stale."""
    from django.db import close_old_connections

    close_old_connections()
    return fn(*args, **kwargs)


def _publish_sync(task_id: str, write: Callable[[], Outcome]) -> Outcome | None:
    try:
        outcome = write()
    except Exception:
        log.exception("progress: could not store a report for task %s", task_id)
        return None
    if outcome.send is not None or outcome.flush_at is not None:
        try:
            _deliver(outcome, _loop_for_sync_caller(), task_id)
        except Exception:
            log.exception("progress: could not fan out a report for task %s", task_id)
    _log_ignored(task_id, outcome)
    return outcome


async def _publish_async(task_id: str, write: Callable[[], Outcome]) -> Outcome | None:
    try:
        outcome: Outcome = await sync_to_async(_db_call, thread_sensitive=False)(write)
    except Exception:
        log.exception("progress: could not store a report for task %s", task_id)
        return None
    try:
        _deliver(outcome, asyncio.get_running_loop(), task_id)
    except Exception:
        log.exception("progress: could not fan out a report for task %s", task_id)
    _log_ignored(task_id, outcome)
    return outcome


def _log_ignored(task_id: str, outcome: Outcome) -> None:
    from .state import Verdict

    if outcome.verdict is Verdict.STALE or outcome.verdict is Verdict.FINAL:
        log.info("progress: ignored a %s report for task %s", outcome.verdict.value, task_id)


# --- the API --------------------------------------------------------------------------------


def _min_interval() -> float:
    """Seconds between two progress fan-outs of one task (0: no coalescing)."""
    rate = get_settings().MAX_UPDATES_PER_SECOND
    return 1.0 / rate if rate > 0 else 0.0


def _progress_writer(
    task_id: str,
    stage: ProgressStage | str,
    percentage: float,
    message: str | None,
    attempt: int | None,
) -> Callable[[], Outcome]:
    checked_stage, checked_percentage = _check_progress(task_id, stage, percentage, message)
    min_interval = _min_interval()

    def write() -> Outcome:
        return store.record_progress(
            task_id,
            checked_stage,
            checked_percentage,
            message,
            attempt=attempt,
            min_interval=min_interval,
        )

    return write


def _error_writer(
    task_id: str,
    error_code: str,
    user_message: str,
    technical_detail: str | None,
    attempt: int | None,
) -> Callable[[], Outcome]:
    _check_error(task_id, error_code, user_message, technical_detail)

    def write() -> Outcome:
        return store.record_error(task_id, error_code, user_message, technical_detail, attempt=attempt)

    return write


def report_progress(
    task_id: str,
    stage: ProgressStage | str,
    percentage: float,
    message: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Record a job's progress and fan it out; True if it changed the task. Never raises for I/O."""
    _forbid_running_loop("report_progress")
    outcome = _publish_sync(task_id, _progress_writer(task_id, stage, percentage, message, attempt))
    return outcome is not None and outcome.accepted


async def areport_progress(
    task_id: str,
    stage: ProgressStage | str,
    percentage: float,
    message: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Async twin of report_progress."""
    write = _progress_writer(task_id, stage, percentage, message, attempt)
    outcome = await _publish_async(task_id, write)
    return outcome is not None and outcome.accepted


def report_error(
    task_id: str,
    error_code: str,
    user_message: str,
    technical_detail: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Fail a task and tell its watchers; True if it ended the task. Never raises for I/O."""
    _forbid_running_loop("report_error")
    write = _error_writer(task_id, error_code, user_message, technical_detail, attempt)
    outcome = _publish_sync(task_id, write)
    return outcome is not None and outcome.accepted


async def areport_error(
    task_id: str,
    error_code: str,
    user_message: str,
    technical_detail: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Async twin of report_error."""
    write = _error_writer(task_id, error_code, user_message, technical_detail, attempt)
    outcome = await _publish_async(task_id, write)
    return outcome is not None and outcome.accepted


def restart_task(task_id: str, message: str | None = None) -> int | None:
    """Re-queue a failed task as a new attempt and tell its watchers; the attempt, or None."""
    _forbid_running_loop("restart_task")
    outcome = _publish_sync(task_id, lambda: _restarted(task_id, message))
    return _attempt_of(outcome)


async def arestart_task(task_id: str, message: str | None = None) -> int | None:
    """Async twin of restart_task."""
    outcome = await _publish_async(task_id, lambda: _restarted(task_id, message))
    return _attempt_of(outcome)


def _restarted(task_id: str, message: str | None) -> Outcome:
    from .state import Verdict

    return store.restart(task_id, message) or Outcome(Verdict.FINAL, 0)


def _attempt_of(outcome: Outcome | None) -> int | None:
    if outcome is None or outcome.send is None:
        return None
    return ProgressMessage.model_validate_json(outcome.send["text"]).attempt


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
