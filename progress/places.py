"""Where each waiting task stands: its place in line and an estimated start, told to its watchers.

The place comes from ``queue.order_now()``; the estimate from how long recent jobs took and how long
the running ones have run. Watchers learn their own task's place and nothing of the others.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from datetime import datetime

from . import store
from .models import Task
from .queue import order_now
from .schemas import QueueMessage, TaskStatus, utcnow
from .sender import deliver, loop_for_sync_caller
from .state import Verdict

__all__ = ["Place", "announce", "estimate_starts", "place_of", "places", "typical_duration"]

log = logging.getLogger("progress")

RECENT_JOBS = 20
"""Completed jobs whose durations make the estimate."""

Place = tuple[int, float | None]
"""(tasks that start first, estimated seconds until this one starts or None)."""


def estimate_starts(count: int, running: Sequence[float], typical: float | None) -> list[float | None]:
    """Seconds until each of ``count`` waiting tasks starts, in their order. ``running``: how long each
    running job has run; ``typical``: a job's usual length (None: no estimate). A worker takes the next
    task when its job is expected to end; with nothing running, one worker is assumed."""
    if typical is None:
        return [None] * count
    free = [max(0.0, typical - elapsed) for elapsed in running] or [0.0]
    heapq.heapify(free)
    starts: list[float | None] = []
    for _ in range(count):
        at = heapq.heappop(free)
        starts.append(at)
        heapq.heappush(free, at + typical)
    return starts


def typical_duration() -> float | None:
    """The mean length of the last RECENT_JOBS completed jobs, in seconds (None before the first)."""
    rows = (
        Task.objects.filter(status=TaskStatus.COMPLETE.value, started_at__isnull=False)
        .order_by("-updated_at")
        .values_list("started_at", "updated_at")[:RECENT_JOBS]
    )
    lengths = [(ended - started).total_seconds() for started, ended in rows if started is not None]
    return sum(lengths) / len(lengths) if lengths else None


def _running_for(now: datetime) -> list[float]:
    rows = Task.objects.filter(status=TaskStatus.RUNNING.value, heartbeat_at__isnull=False).values_list(
        "started_at", flat=True
    )
    return [(now - started).total_seconds() for started in rows if started is not None]


def places() -> dict[str, Place]:
    """Every waiting task's place and estimated start."""
    order = order_now()
    starts = estimate_starts(len(order), _running_for(utcnow()), typical_duration())
    return {task.task_id: (i, starts[i]) for i, task in enumerate(order)}


def place_of(task_id: str) -> Place | None:
    """The task's place and estimated start while it waits; None when it does not wait."""
    return places().get(task_id)


def announce() -> None:
    """Tell every waiting task's watchers its place now (after a change of the line). Never raises."""
    try:
        loop = loop_for_sync_caller()
        now = time.time()
        for task_id, (position, starts_in) in places().items():
            text = QueueMessage(
                task_id=task_id, queue_position=position, starts_in_seconds=starts_in
            ).model_dump_json()
            message = store.GroupMessage(
                type="task.queue", task_id=task_id, seq=0, prev_seq=0, final=False, text=text, at=now
            )
            deliver(store.Outcome(Verdict.FINAL, 0, message), loop, task_id)
    except Exception:
        log.exception("progress: could not tell waiting tasks their places")
