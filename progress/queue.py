"""The queue of record: which waiting task starts next, fairly across owners, and each one's place.

A task waits while it is running, in stage ``queued``, and no job has claimed it. Whatever runs jobs
(Celery workers, a thread pool) holds only turns: a turn claims the task ``fair_order`` puts first, so
one owner's twenty files never keep another owner's one file waiting for all twenty.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max

from .models import Task
from .recorder import Job, claim
from .schemas import TaskStatus
from .stages import QUEUED

__all__ = ["Waiting", "claim_next", "fair_order", "last_started", "order_now", "running_by_owner", "waiting"]

CLAIM_TRIES = 8
"""Times a turn looks again when another process claimed the task it chose first."""


@dataclass(frozen=True)
class Waiting:
    """A task waiting to start: who owns it and since when it waits."""

    task_id: str
    attempt: int
    owner: str
    since: datetime


def fair_order(
    tasks: Sequence[Waiting], running: Mapping[str, int], last_started: Mapping[str, datetime] | None = None
) -> list[Waiting]:
    """The order in which ``tasks`` start: next is always the owner with the fewest jobs ``running`` (or
    ahead in this order), then the one whose last job started longest ago (``last_started``; never
    comes first), then whoever has waited longest; each owner's own tasks start in arrival order."""
    started = last_started or {}
    queues: dict[str, deque[Waiting]] = defaultdict(deque)
    for task in sorted(tasks, key=lambda t: (t.since, t.task_id)):
        queues[task.owner].append(task)
    # (jobs, turn, since, task id, owner): a turn of (0, t) is a real start at t, (1, n) the n-th start
    # in this order, so an owner served here goes behind everyone served before.
    heap = [
        (running.get(owner, 0), _turn(started.get(owner)), queue[0].since, queue[0].task_id, owner)
        for owner, queue in queues.items()
    ]
    heapq.heapify(heap)
    order: list[Waiting] = []
    while heap:
        load, _, _, _, owner = heapq.heappop(heap)
        queue = queues[owner]
        order.append(queue.popleft())
        if queue:
            heapq.heappush(heap, (load + 1, (1, float(len(order))), queue[0].since, queue[0].task_id, owner))
    return order


def _turn(started: datetime | None) -> tuple[int, float]:
    return (0, started.timestamp() if started is not None else float("-inf"))


def waiting() -> list[Waiting]:
    """Every task waiting to start (in no particular order)."""
    rows = Task.objects.filter(
        status=TaskStatus.RUNNING.value, stage=QUEUED, heartbeat_at__isnull=True
    ).values_list("task_id", "attempt", "owner", "updated_at")
    return [Waiting(*row) for row in rows]


def running_by_owner() -> dict[str, int]:
    """Jobs running now (claimed, not ended), by owner."""
    rows = (
        Task.objects.filter(status=TaskStatus.RUNNING.value, heartbeat_at__isnull=False)
        .values("owner")
        .annotate(n=Count("task_id"))
        .values_list("owner", "n")
    )
    return dict(rows)


def last_started(owners: Iterable[str]) -> dict[str, datetime]:
    """When each of ``owners`` last had a job start (owners who never did are left out)."""
    rows = (
        Task.objects.filter(owner__in=set(owners), started_at__isnull=False)
        .values("owner")
        .annotate(last=Max("started_at"))
        .values_list("owner", "last")
    )
    return dict(rows)


def order_now() -> list[Waiting]:
    """Every waiting task, in the order they will start as things stand."""
    tasks = waiting()
    return fair_order(tasks, running_by_owner(), last_started(t.owner for t in tasks))


def claim_next(*, beat_interval: float | None = None) -> Job | None:
    """Claim the task that ``fair_order`` starts first, for this process; None when nothing waits."""
    for _ in range(CLAIM_TRIES):
        order = order_now()
        if not order:
            return None
        for task in order[:CLAIM_TRIES]:  # another process may have claimed the first ones meanwhile
            job = claim(task.task_id, task.attempt, beat_interval=beat_interval)
            if job is not None:
                from .places import announce  # every task behind it moved up

                announce()
                return job
    return None
