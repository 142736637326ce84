"""The rules a report must pass before it changes a task: pure functions, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .schemas import TaskStatus
from .stages import Stages


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
    stage: str
    percentage: int
    message: str | None
    broadcast_at: float | None


def judge_progress(
    current: Current,
    *,
    stage: str,
    percentage: int,
    message: str | None,
    attempt: int | None,
    now: float,
    min_interval: float,
    stages: Stages,
) -> Verdict:
    """Decide the fate of a progress report against the task's current state, in ``stages``' order."""
    if current.status is not TaskStatus.RUNNING:
        return Verdict.FINAL
    if attempt is not None and attempt != current.attempt:
        return Verdict.STALE
    # A stored stage the project no longer declares ranks first: any declared stage may follow it.
    current_rank = stages.rank(current.stage) if current.stage in stages else -1
    if stages.rank(stage) < current_rank:
        return Verdict.STALE
    if stage == current.stage:
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
RESTARTABLE_VALUES = tuple(sorted(status.value for status in RESTARTABLE))
"""The same, as the strings stored and sent."""
