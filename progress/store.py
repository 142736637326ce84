"""Reads and writes of durable task state; every write is one transaction that assigns seqs."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from django.db import IntegrityError, transaction

from . import rows, webhooks
from .access import public_detail
from .conf import get_settings
from .models import Task, TaskEvent, Tombstone
from .schemas import (
    CancelledMessage,
    ErrorMessage,
    ProgressMessage,
    SnapshotMessage,
    StageTransition,
    TaskError,
    TaskStatus,
    utcnow,
)
from .stages import COMPLETE, QUEUED
from .state import RESTARTABLE, Current, Verdict, judge_cancel, judge_error, judge_progress

log = logging.getLogger("progress")


class GroupMessage(TypedDict):
    """What travels through the channel layer: the frame, encoded once, and its place in order."""

    type: str
    task_id: str
    seq: int
    prev_seq: int
    final: bool
    """Completion: watchers close after it (after an error they stay, for a retry)."""
    text: str
    at: float
    """Epoch seconds of the hand-off, for the server's fan-out lag metric."""


@dataclass(frozen=True)
class Outcome:
    """What a write did, and what the publisher must send or schedule because of it."""

    verdict: Verdict
    seq: int
    send: GroupMessage | None = None
    flush_at: float | None = None

    @property
    def accepted(self) -> bool:
        """Whether the report changed the task."""
        return self.verdict in (Verdict.BROADCAST, Verdict.COALESCE)


def group_name(task_id: str) -> str:
    """The channel-layer group of one task's watchers."""
    return f"task.{task_id}"


# What a progress report reads, and what it may change.
_PROGRESS_READS = (
    "task_id",
    "status",
    "stage",
    "percentage",
    "message",
    "seq",
    "attempt",
    "broadcast_seq",
    "broadcast_at",
)
_PROGRESS_WRITES = (
    "seq",
    "stage",
    "percentage",
    "message",
    "updated_at",
    "status",
    "broadcast_seq",
    "broadcast_at",
)
_SENT = ("broadcast_seq", "broadcast_at")
_ERROR_FIELDS = ("error_code", "user_message", "technical_detail")


def _lock_or_create(task_id: str, stage: str, now: datetime) -> Task | None:
    """The task's row, locked; a new task starts as a row with seq 0 that the caller fills in.

    None for a deleted task: a late report (its job stopping, an upload's last bytes) revives nothing."""
    task = rows.lock(task_id, _PROGRESS_READS)
    if task is not None:
        return task
    if Tombstone.objects.filter(digest=tombstone_digest(task_id)).exists():
        return None
    try:
        with transaction.atomic(using=rows.using()):  # a savepoint: two first reports may race here
            Task.objects.create(task_id=task_id, stage=stage, created_at=now, updated_at=now)
    except IntegrityError:
        pass
    task = rows.lock(task_id, _PROGRESS_READS)
    assert task is not None
    return task


def tombstone_digest(task_id: str) -> str:
    """What a deleted task leaves behind: a digest of its id, which names nothing of it."""
    return hashlib.sha256(task_id.encode()).hexdigest()


def create(task_id: str, owner: str, stage: str) -> None:
    """Make a new task's row (seq 0) for ``owner``; its first report gives it seq 1. Raises if it exists."""
    now = utcnow()
    Task.objects.create(task_id=task_id, owner=owner, stage=stage, created_at=now, updated_at=now)


def owner(task_id: str) -> str | None:
    """The task's owner key ("" for none), or None when there is no such task."""
    return Task.objects.filter(pk=task_id).values_list("owner", flat=True).first()


def _current(task: Task) -> Current:
    return Current(
        status=TaskStatus(task.status),
        attempt=task.attempt,
        stage=task.stage,
        percentage=task.percentage,
        message=task.message,
        broadcast_at=task.broadcast_at,
    )


def progress_frame(task: Task, timestamp: datetime) -> str:
    """The ProgressMessage frame of a task's current state."""
    return ProgressMessage(
        task_id=task.task_id,
        seq=task.seq,
        attempt=task.attempt,
        stage=task.stage,
        percentage=task.percentage,
        message=task.message,
        timestamp=timestamp,
    ).model_dump_json()


def _fan_out(task: Task, text: str, now_ts: float, *, final: bool = False) -> GroupMessage:
    """Mark the task's current seq as sent; the caller saves the task."""
    prev = task.broadcast_seq
    task.broadcast_seq = task.seq
    task.broadcast_at = now_ts
    return GroupMessage(
        type="task.event",
        task_id=task.task_id,
        seq=task.seq,
        prev_seq=prev,
        final=final,
        text=text,
        at=now_ts,
    )


def _event(task: Task, text: str, stage: str | None, when: datetime) -> None:
    TaskEvent.objects.create(
        task=task,
        seq=task.seq,
        attempt=task.attempt,
        stage=stage,
        payload=text,
        created_at=when,
    )


def record_progress(
    task_id: str,
    stage: str,
    percentage: int,
    message: str | None,
    *,
    attempt: int | None,
    min_interval: float,
) -> Outcome:
    """Apply one progress report; the returned outcome says what to send."""
    now, now_ts = utcnow(), time.time()
    stages = get_settings().stages
    if stage == COMPLETE:
        percentage = 100
    with transaction.atomic(using=rows.using()):
        task = _lock_or_create(task_id, stage, now)
        if task is None:
            return Outcome(Verdict.FINAL, 0)
        if task.seq == 0:
            verdict = Verdict.BROADCAST
        else:
            verdict = judge_progress(
                _current(task),
                stage=stage,
                percentage=percentage,
                message=message,
                attempt=attempt,
                now=now_ts,
                min_interval=min_interval,
                stages=stages,
            )
            if not (verdict is Verdict.BROADCAST or verdict is Verdict.COALESCE):
                return Outcome(verdict, task.seq)
        stage_changed = task.seq == 0 or stage != task.stage
        task.seq += 1
        task.stage = stage
        task.percentage = percentage
        task.message = message
        task.updated_at = now
        if stage == COMPLETE:
            task.status = TaskStatus.COMPLETE.value
        writes: tuple[str, ...] = _PROGRESS_WRITES
        if stage not in stages or not stages.before_job(stage):  # pre-job stages start no liveness clock
            task.heartbeat_at = now
            writes = (*writes, "heartbeat_at")
        send = flush_at = None
        if verdict is Verdict.BROADCAST:
            text = progress_frame(task, now)
            send = _fan_out(task, text, now_ts, final=stage == COMPLETE)
            rows.write(task, writes)
            if stage_changed:
                _event(task, text, stage, now)
            if stage == COMPLETE:
                webhooks.ended(task_id, task.status, None, now_ts)
        else:
            assert task.broadcast_at is not None  # COALESCE is only judged after a fan-out
            flush_at = task.broadcast_at + min_interval
            rows.write(task, writes)
    return Outcome(verdict, task.seq, send, flush_at)


def record_error(
    task_id: str,
    error_code: str,
    user_message: str,
    technical_detail: str | None,
    *,
    attempt: int | None,
) -> Outcome:
    """Fail a running task: stored, given a seq, and sent as the final message."""
    now, now_ts = utcnow(), time.time()
    with transaction.atomic(using=rows.using()):
        task = _lock_or_create(task_id, QUEUED, now)
        if task is None:
            return Outcome(Verdict.FINAL, 0)
        if task.seq > 0:
            verdict = judge_error(_current(task), attempt=attempt)
            if verdict is not Verdict.BROADCAST:
                return Outcome(verdict, task.seq)
        task.seq += 1
        task.status = TaskStatus.FAILED.value
        task.error_code = error_code
        task.user_message = user_message
        task.technical_detail = technical_detail
        task.updated_at = now
        text = ErrorMessage(
            task_id=task_id,
            seq=task.seq,
            attempt=task.attempt,
            error_code=error_code,
            user_message=user_message,
            technical_detail=public_detail(technical_detail),
            timestamp=now,
        ).model_dump_json()
        send = _fan_out(task, text, now_ts)  # not final: watchers stay for a retry
        rows.write(task, ("seq", "status", *_ERROR_FIELDS, "updated_at", *_SENT))
        _event(task, text, None, now)
        webhooks.ended(task_id, task.status, error_code, now_ts)
    # The whole detail stays here and in the row; watchers get public_detail() of it.
    log.info("progress: task %s failed: %s; detail: %s", task_id, error_code, technical_detail)
    return Outcome(Verdict.BROADCAST, task.seq, send)


def record_cancel(task_id: str) -> Outcome:
    """Cancel a running task (waiting or working): stored, given a seq, sent like an error. Its job
    learns of it at its next check; a task that has ended, or does not exist, is left as it is."""
    now, now_ts = utcnow(), time.time()
    with transaction.atomic(using=rows.using()):
        task = rows.lock(task_id, _PROGRESS_READS)
        if task is None:
            return Outcome(Verdict.FINAL, 0)
        verdict = judge_cancel(_current(task))
        if verdict is not Verdict.BROADCAST:
            return Outcome(verdict, task.seq)
        task.seq += 1
        task.status = TaskStatus.CANCELLED.value
        task.updated_at = now
        text = CancelledMessage(
            task_id=task_id, seq=task.seq, attempt=task.attempt, timestamp=now
        ).model_dump_json()
        send = _fan_out(task, text, now_ts)  # not final: watchers stay for a retry
        rows.write(task, ("seq", "status", "updated_at", *_SENT))
        _event(task, text, None, now)
        webhooks.ended(task_id, task.status, None, now_ts)
    log.info("progress: task %s cancelled", task_id)
    return Outcome(Verdict.BROADCAST, task.seq, send)


def status_of(task_id: str) -> str | None:
    """The task's status now, or None when there is no such task."""
    return Task.objects.filter(pk=task_id).values_list("status", flat=True).first()


def still_running(task_id: str, attempt: int) -> bool:
    """Whether ``attempt`` of the task still runs (not cancelled, failed, retried or deleted)."""
    return Task.objects.filter(pk=task_id, attempt=attempt, status=TaskStatus.RUNNING.value).exists()


def restart(task_id: str, message: str | None = None) -> Outcome | None:
    """Start a new attempt of a failed or cancelled task: back to queued, seq still rising; None if it
    is not one."""
    now, now_ts = utcnow(), time.time()
    with transaction.atomic(using=rows.using()):
        task = rows.lock(task_id, _PROGRESS_READS)
        if task is None or TaskStatus(task.status) not in RESTARTABLE:
            return None
        task.seq += 1
        task.attempt += 1
        task.status = TaskStatus.RUNNING.value
        task.stage = QUEUED
        task.percentage = 0
        task.message = message
        task.error_code = task.user_message = task.technical_detail = None
        task.heartbeat_at = None
        task.updated_at = now
        text = progress_frame(task, now)
        send = _fan_out(task, text, now_ts)
        rows.write(task, (*_PROGRESS_WRITES, "attempt", *_ERROR_FIELDS, "heartbeat_at"))
        _event(task, text, QUEUED, now)
    return Outcome(Verdict.BROADCAST, task.seq, send)


def flush(task_id: str, min_interval: float = 0.0) -> Outcome | None:
    """Send the state coalescing held back, once the rate allows; or say when to try again."""
    now_ts = time.time()
    with transaction.atomic(using=rows.using()):
        task = rows.lock(task_id, (*_PROGRESS_READS, "updated_at"))
        if task is None or task.status != TaskStatus.RUNNING.value:
            return None
        if task.seq <= task.broadcast_seq:
            return None
        if task.broadcast_at is not None and now_ts < task.broadcast_at + min_interval:
            # Another report or flush went out meanwhile: sending now would exceed the rate.
            return Outcome(Verdict.COALESCE, task.seq, flush_at=task.broadcast_at + min_interval)
        send = _fan_out(task, progress_frame(task, task.updated_at), now_ts)
        rows.write(task, _SENT)
    return Outcome(Verdict.BROADCAST, task.seq, send)


def beat(task_id: str, attempt: int | None = None) -> bool:
    """Record that a job is alive; False when the task is no longer running this attempt."""
    running = Task.objects.filter(task_id=task_id, status=TaskStatus.RUNNING.value)
    if attempt is not None:
        running = running.filter(attempt=attempt)
    return running.update(heartbeat_at=utcnow()) == 1


def stale_tasks(stale_after: float) -> list[tuple[str, int]]:
    """Running tasks whose job has started and then gone quiet for longer than stale_after."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = Task.objects.filter(
        status=TaskStatus.RUNNING.value, heartbeat_at__isnull=False, heartbeat_at__lt=cutoff
    )
    return list(rows.values_list("task_id", "attempt"))


def place_in_line(task: Task) -> tuple[int, float | None] | None:
    """The task's place in line and estimated start while it waits to start; None otherwise."""
    if (task.status, task.stage, task.heartbeat_at) != (
        TaskStatus.RUNNING.value,
        QUEUED,
        None,
    ):
        return None
    from .places import place_of  # places reads the queue, which claims through the recorder

    return place_of(task.task_id)


def snapshot_message(task: Task, history: list[StageTransition]) -> SnapshotMessage:
    """A task's SnapshotMessage, from its row and its stage history (and its place while it waits)."""
    place = place_in_line(task)
    error = None
    if task.status == TaskStatus.FAILED.value:
        error = TaskError(
            error_code=task.error_code or "unknown",
            user_message=task.user_message or "",
            technical_detail=public_detail(task.technical_detail),
        )
    return SnapshotMessage(
        task_id=task.task_id,
        seq=task.seq,
        attempt=task.attempt,
        status=TaskStatus(task.status),
        stage=task.stage,
        percentage=task.percentage,
        message=task.message,
        error=error,
        history=history,
        created_at=task.created_at,
        timestamp=task.updated_at,
        stages=list(get_settings().stages.names),
        queue_position=place[0] if place else None,
        starts_in_seconds=place[1] if place else None,
    )
