"""Where each waiting task stands: its place in line and an estimated start, told to its watchers.

The place comes from ``queue.order_now()``; the estimate from how long recent jobs took and how long
the running ones have run. Watchers learn their own task's place and nothing of the others.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from django.db import connection

from . import store
from .delivery import deliver
from .loops import loop_for_sync_caller
from .models import Task
from .queue import order_now
from .schemas import QueueMessage, TaskStatus, utcnow
from .state import Verdict

__all__ = ["Place", "announce", "estimate_starts", "place_of", "places", "typical_duration"]

log = logging.getLogger("progress")

RECENT_JOBS = 20
"""Completed jobs whose durations make the estimate."""
MAX_AGE = 1.0
"""Seconds a process reuses the line it read for snapshots (a change this process makes drops it; the
live ``queue`` frames correct what another process changed meanwhile)."""
ANNOUNCE_EVERY = 0.25
"""Seconds between two announcements from one process: a burst of changes is told once, at its end."""
ESTIMATE_STEP = 30.0
"""A waiting task is told again when its place changes, or its estimated start by this many seconds."""

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


def _read_places() -> dict[str, Place]:
    order = order_now()
    starts = estimate_starts(len(order), _running_for(utcnow()), typical_duration())
    return {task.task_id: (i, starts[i]) for i, task in enumerate(order)}


class _Line:
    """This process's last reading of the line, and its announcements, coalesced."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.read: tuple[float, dict[str, Place]] | None = None
        self.reading: threading.Event | None = None
        """Set when the read in flight is done: threads that want the line meanwhile wait for it."""
        self.changes = 0
        self.announced_at = float("-inf")
        self.trailing: threading.Timer | None = None
        self.told: dict[str, tuple[int, int | None]] = {}
        """What this process last told each waiting task: its place and its estimate's step."""

    def places(self) -> dict[str, Place]:
        # One read at a time: a reconnect storm's snapshots all want the line as its reading expires,
        # and each read of a long line costs as much as hundreds of snapshots.
        while True:
            with self.lock:
                kept, reading = self.read, self.reading
                if kept is not None and self.clock() - kept[0] < MAX_AGE:
                    return kept[1]
                if reading is None:
                    done = self.reading = threading.Event()
                    began, changes = self.clock(), self.changes
                    break
            reading.wait(5)
        try:
            found = _read_places()
            with self.lock:
                if self.changes == changes:  # else the line changed during the read: not kept
                    self.read = (began, found)
        finally:
            with self.lock:
                self.reading = None
            done.set()
        return found

    def changed(self) -> None:
        """The line changed: forget the reading, and announce now or at the end of the burst."""
        with self.lock:
            self.read = None
            self.changes += 1
            wait = self.announced_at + ANNOUNCE_EVERY - self.clock()
            if wait <= 0:
                self.announced_at = self.clock()
            elif self.trailing is None:
                self.trailing = threading.Timer(wait, self._trail)
                self.trailing.daemon = True
                self.trailing.start()
                return
            else:
                return  # the trailing announcement will tell this change too
        _announce()

    def _trail(self) -> None:
        with self.lock:
            self.trailing = None
            self.read = None
            self.changes += 1
            self.announced_at = self.clock()
        try:
            _announce()
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # this timer's thread opened one


_line = _Line()


def places() -> dict[str, Place]:
    """Every waiting task's place and estimated start (this process's reading, at most MAX_AGE old)."""
    return _line.places()


def place_of(task_id: str) -> Place | None:
    """The task's place and estimated start while it waits; None when it does not wait."""
    return places().get(task_id)


def news(line: _Line, found: Mapping[str, Place]) -> dict[str, Place]:
    """The places in ``found`` that differ from what ``line``'s process last told (and remember them).

    Telling every waiting task on every change cost a burst of uploads a message per waiting task
    per announcement; a task joining at the end of the line moves nobody ahead of it."""
    changed: dict[str, Place] = {}
    told: dict[str, tuple[int, int | None]] = {}
    with line.lock:
        for task_id, (position, starts_in) in found.items():
            step = None if starts_in is None else round(starts_in / ESTIMATE_STEP)
            told[task_id] = (position, step)
            if line.told.get(task_id) != (position, step):
                changed[task_id] = (position, starts_in)
        line.told = told
    return changed


def announce() -> None:
    """The line changed (a claim, a cancel or delete, a task joining): the watchers of every waiting
    task whose place moved hear it, now or within ANNOUNCE_EVERY. Never raises."""
    _line.changed()


def _announce() -> None:
    try:
        loop = loop_for_sync_caller()
        now = time.time()
        for task_id, (position, starts_in) in news(_line, _line.places()).items():
            text = QueueMessage(
                task_id=task_id, queue_position=position, starts_in_seconds=starts_in
            ).model_dump_json()
            message = store.GroupMessage(
                type="task.queue", task_id=task_id, seq=0, prev_seq=0, final=False, text=text, at=now
            )
            deliver(store.Outcome(Verdict.FINAL, 0, message), loop, task_id)
    except Exception:
        log.exception("progress: could not tell waiting tasks their places")
