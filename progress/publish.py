"""The publishing API: jobs and views report here; it stores, then fans out through the layer."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from numbers import Real

from asgiref.sync import sync_to_async
from pydantic import ValidationError

from . import metrics, store
from .conf import get_settings
from .db import adb_call
from .delivery import deliver, wait_until_sent
from .loops import bind_server_loop, loop_for_sync_caller
from .schemas import ErrorMessage, ProgressMessage
from .stages import QUEUED
from .store import Outcome

log = logging.getLogger("progress")

__all__ = [
    "areport_error",
    "areport_progress",
    "arestart_task",
    "astart_task",
    "bind_server_loop",
    "report_error",
    "report_progress",
    "restart_task",
    "start_task",
    "wait_until_sent",
]


# --- validation -----------------------------------------------------------------------------


def _check_progress(task_id: str, stage: str, percentage: float, message: str | None) -> tuple[str, int]:
    """Validate a progress report's arguments, raising ValueError at the call site."""
    if isinstance(percentage, bool) or not isinstance(percentage, Real) or not math.isfinite(percentage):
        raise ValueError(f"percentage must be a number from 0 to 100, not {percentage!r}")
    stages = get_settings().stages
    if stage not in stages:
        raise ValueError(f"stage must be one of {list(stages.names)} (PROGRESS['STAGES']), not {stage!r}")
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


def _publish_sync(task_id: str, write: Callable[[], Outcome]) -> Outcome | None:
    started = time.perf_counter()
    try:
        outcome = write()
    except Exception:
        log.exception("progress: could not store a report for task %s", task_id)
        metrics.REPORTS.labels("failed").inc()
        return None
    if outcome.send is not None or outcome.flush_at is not None:
        try:
            deliver(outcome, loop_for_sync_caller(), task_id)
        except Exception:
            log.exception("progress: could not fan out a report for task %s", task_id)
    _counted(task_id, outcome, started)
    return outcome


async def _publish_async(task_id: str, write: Callable[[], Outcome]) -> Outcome | None:
    started = time.perf_counter()
    try:
        outcome: Outcome = await adb_call(write)
    except Exception:
        log.exception("progress: could not store a report for task %s", task_id)
        metrics.REPORTS.labels("failed").inc()
        return None
    try:
        deliver(outcome, asyncio.get_running_loop(), task_id)
    except Exception:
        log.exception("progress: could not fan out a report for task %s", task_id)
    _counted(task_id, outcome, started)
    return outcome


_OUTCOMES = {"broadcast": "accepted", "coalesce": "coalesced"}
"""Verdicts as progress_reports_total names them (the rest by their own name: stale, repeat, final)."""


def _counted(task_id: str, outcome: Outcome, started: float) -> None:
    from .state import Verdict

    metrics.REPORT_SECONDS.observe(time.perf_counter() - started)
    metrics.REPORTS.labels(_OUTCOMES.get(outcome.verdict.value, outcome.verdict.value)).inc()
    if outcome.verdict is Verdict.STALE or outcome.verdict is Verdict.FINAL:
        log.info("progress: ignored a %s report for task %s", outcome.verdict.value, task_id)


# --- the API --------------------------------------------------------------------------------


def _progress_writer(
    task_id: str,
    stage: str,
    percentage: float,
    message: str | None,
    attempt: int | None,
) -> Callable[[], Outcome]:
    checked_stage, checked_percentage = _check_progress(task_id, stage, percentage, message)
    min_interval = get_settings().min_interval

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
    stage: str,
    percentage: float,
    message: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Record a job's progress and fan it out; True if it changed the task. Never raises for I/O."""
    _forbid_running_loop("report_progress")
    outcome = _publish_sync(task_id, _progress_writer(task_id, stage, percentage, message, attempt))
    accepted = outcome is not None and outcome.accepted
    if accepted and stage == QUEUED:
        _line_changed()
    return accepted


async def areport_progress(
    task_id: str,
    stage: str,
    percentage: float,
    message: str | None = None,
    *,
    attempt: int | None = None,
) -> bool:
    """Async twin of report_progress."""
    write = _progress_writer(task_id, stage, percentage, message, attempt)
    outcome = await _publish_async(task_id, write)
    accepted = outcome is not None and outcome.accepted
    if accepted and stage == QUEUED:
        await sync_to_async(_line_changed, thread_sensitive=False)()
    return accepted


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


def start_task(stage: str = QUEUED, message: str | None = None, *, owner: str = "") -> str:
    """Create a task with a fresh unguessable id, owned by ``owner`` (see progress.access); its id.

    Unlike the reports, this raises when the task cannot be stored: the caller has nothing to hand out.
    """
    from .access import new_task_id

    _forbid_running_loop("start_task")
    task_id = new_task_id()
    checked, _ = _check_progress(task_id, stage, 0, message)
    store.create(task_id, owner, checked)
    report_progress(task_id, checked, 0, message)
    return task_id


async def astart_task(stage: str = QUEUED, message: str | None = None, *, owner: str = "") -> str:
    """Async twin of start_task."""
    from .access import new_task_id

    task_id = new_task_id()
    checked, _ = _check_progress(task_id, stage, 0, message)
    await adb_call(store.create, task_id, owner, checked)
    await areport_progress(task_id, checked, 0, message)
    return task_id


def restart_task(task_id: str, message: str | None = None) -> int | None:
    """Re-queue a failed task as a new attempt and tell its watchers; the attempt, or None."""
    _forbid_running_loop("restart_task")
    outcome = _publish_sync(task_id, lambda: _restarted(task_id, message))
    attempt = _attempt_of(outcome)
    if attempt is not None:
        _line_changed()
    return attempt


async def arestart_task(task_id: str, message: str | None = None) -> int | None:
    """Async twin of restart_task."""
    outcome = await _publish_async(task_id, lambda: _restarted(task_id, message))
    attempt = _attempt_of(outcome)
    if attempt is not None:
        await sync_to_async(_line_changed, thread_sensitive=False)()
    return attempt


def _line_changed() -> None:
    """A task joined the line: every waiting task's watchers hear their place (it may go ahead)."""
    from .places import announce  # places reads the queue, which claims through the recorder

    announce()


def _restarted(task_id: str, message: str | None) -> Outcome:
    from .state import Verdict

    return store.restart(task_id, message) or Outcome(Verdict.FINAL, 0)


def _attempt_of(outcome: Outcome | None) -> int | None:
    if outcome is None or outcome.send is None:
        return None
    return ProgressMessage.model_validate_json(outcome.send["text"]).attempt
