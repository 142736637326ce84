"""The rules a report must pass before it changes a task: pure functions, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .schemas import ProgressStage, TaskStatus


class Verdict(enum.StrEnum):
    """What to do with one report."""

    BROADCAST = "broadcast"
    """Store it and send it to every watcher now."""
    COALESCE = "coalesce"
    """Store it; watchers get it (or a newer one) when the rate limit allows."""
    REPEAT = "repeat"
    """Identical to the current state: nothing to store or send."""
    STALE = "stale"
    """Older than the current state (lower stage or percentage, or an old attempt): ignored."""
    FINAL = "final"
    """The task already ended: ignored."""


@dataclass(frozen=True)
class Current:
    """The part of a task's stored state the rules look at."""

    status: TaskStatus
    attempt: int
    stage: ProgressStage
    percentage: int
    message: str | None
    broadcast_at: float | None


def judge_progress(
    current: Current,
    *,
    stage: ProgressStage,
    percentage: int,
    message: str | None,
    attempt: int | None,
    now: float,
    min_interval: float,
) -> Verdict:
    """Decide the fate of a progress report against the task's current state."""
    if current.status is not TaskStatus.RUNNING:
        return Verdict.FINAL
    if attempt is not None and attempt != current.attempt:
        return Verdict.STALE
    if stage.rank < current.stage.rank:
        return Verdict.STALE
    if stage is current.stage:
        if percentage < current.percentage:
            return Verdict.STALE
        if percentage == current.percentage and message == current.message:
            return Verdict.REPEAT
        if (
            min_interval > 0
            and current.broadcast_at is not None
            and now - current.broadcast_at < min_interval
        ):
            return Verdict.COALESCE
    return Verdict.BROADCAST


def judge_error(current: Current, *, attempt: int | None) -> Verdict:
    """Decide the fate of an error report: it ends a running task, once."""
    if current.status is not TaskStatus.RUNNING:
        return Verdict.FINAL
    if attempt is not None and attempt != current.attempt:
        return Verdict.STALE
    return Verdict.BROADCAST


def judge_cancel(current: Current) -> Verdict:
    """Decide the fate of a cancel: it ends a running task (waiting or working), once."""
    return Verdict.BROADCAST if current.status is TaskStatus.RUNNING else Verdict.FINAL


RESTARTABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
"""The ends a new attempt may follow."""
