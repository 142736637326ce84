"""What a connecting or resuming watcher is sent, read once per task per process and kept while watched.

A connect used to read the task and its history from the database for every socket, queued on
Django's one thread-sensitive worker: after a deploy, every browser reconnecting at once waited in
that queue. Now a process reads a task once (one read shared by the sockets that ask at the same
time) and, where the channel layer pushes, keeps the result while any consumer of this process is in
the task's group. Being in the group, the process receives every message published for the task after the
read, and any of them drops the kept view (``seen()``): no watcher is sent a state older than what
the process has already been told. A resume that claims more than the view knows reads afresh.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from . import store
from .db import adb_call
from .models import Task, TaskEvent
from .schemas import StageTransition, TaskStatus


@dataclass(frozen=True)
class View:
    """Everything a watcher of a task may be sent, read at one seq."""

    seq: int
    ended: bool
    """Completed or failed: the snapshot is followed by the terminal frame."""
    final: bool
    """Completed: nothing can follow, so watchers close. A failed task may be retried: they stay."""
    snapshot: str
    """The SnapshotMessage frame."""
    terminal: str | None
    """The frame that ended the task (completion or error), if it has ended."""
    frames: tuple[tuple[int, str], ...]
    """Stage changes and the terminal frame, then the latest progress if newer, oldest first."""

    def after(self, seq: int) -> list[tuple[int, str]]:
        """What a watcher that has seen up to ``seq`` still needs, in order."""
        return [frame for frame in self.frames if frame[0] > seq]


@functools.cache
def _sql() -> tuple[str, list[str], str]:
    """The two statements a read runs (``{marks}`` for the ids), written once from the models' tables
    and columns: building them through the ORM for every connect cost more than the rest of it."""

    def quote(name: str | None) -> str:
        return str(connection.ops.quote_name(str(name)))

    fields = list(Task._meta.concrete_fields)
    names = [f.attname for f in fields]
    task = (
        f"SELECT {', '.join(quote(f.column) for f in fields)} FROM {quote(Task._meta.db_table)} "
        f"WHERE {quote(Task._meta.get_field('task_id').column)} IN ({{marks}})"
    )
    column = {f.name: quote(f.column) for f in TaskEvent._meta.concrete_fields}
    events = (
        f"SELECT {column['task']}, {column['seq']}, {column['attempt']}, {column['stage']}, "
        f"{column['created_at']}, {column['payload']} FROM {quote(TaskEvent._meta.db_table)} "
        f"WHERE {column['task']} IN ({{marks}}) ORDER BY {column['task']}, {column['seq']}"
    )
    return task, names, events


def _aware(value: Any) -> Any:
    """A datetime as the ORM gives it (SQLite's driver gives naive UTC ones), anything else as is."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


MAX_BATCH = 500
"""Tasks read by one statement at most (SQLite allows a few thousand parameters)."""


def read(task_id: str) -> View | None:
    """A task's view from the database; None for a task nobody reported. The one builder of what a
    watcher or a poller is sent: the socket and ``GET /api/tasks/<id>/`` alike."""
    return read_many([task_id])[task_id]


def read_many(task_ids: Sequence[str]) -> dict[str, View | None]:
    """Several tasks' views in two statements (None for a task nobody reported)."""
    task_sql, names, events_sql = _sql()
    found: dict[str, View | None] = dict.fromkeys(task_ids)
    ids = list(found)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(task_sql.format(marks=marks), chunk)
            tasks = {
                row.task_id: row
                for row in (Task.from_db(connection.alias, names, [_aware(v) for v in r]) for r in cursor)
            }
            if not tasks:
                continue
            events: dict[str, list[tuple[int, int, str | None, datetime, str]]] = {t: [] for t in tasks}
            held = list(tasks)
            cursor.execute(events_sql.format(marks=", ".join(["%s"] * len(held))), held)
            for task_id, seq, attempt, stage, when, payload in cursor:
                if seq <= tasks[task_id].seq:  # written after the task row was read: the next read's
                    events[task_id].append((seq, attempt, stage, _aware(when), payload))
            for task_id, task in tasks.items():
                found[task_id] = _view(task, events[task_id])
    return found


def _view(task: Task, events: list[tuple[int, int, str | None, datetime, str]]) -> View:
    """A task's view from its row and its events up to its seq."""
    history = [
        StageTransition(seq=seq, attempt=attempt, stage=stage, timestamp=when)
        for seq, attempt, stage, when, _ in events
        if stage is not None
    ]
    ended = task.status != TaskStatus.RUNNING.value
    frames = [(seq, payload) for seq, _, _, _, payload in events]
    if not frames or task.seq > frames[-1][0]:
        # Progress within a stage is not kept as events: the latest value stands for them all.
        frames.append((task.seq, store.progress_frame(task, task.updated_at)))
    return View(
        seq=task.seq,
        ended=ended,
        final=task.status == TaskStatus.COMPLETE.value,
        snapshot=store.snapshot_message(task, history).model_dump_json(),
        terminal=events[-1][4] if ended and events else None,
        frames=tuple(frames),
    )


class Views:
    """One process's kept views, for the tasks its consumers watch."""

    def __init__(self) -> None:
        self.watchers: dict[str, int] = {}
        self.kept: dict[str, View] = {}
        self.reads: dict[str, asyncio.Future[tuple[View | None, bool]]] = {}
        self.stale: set[str] = set()
        """Tasks whose read in flight may be older than a message that arrived meanwhile."""

    def watch(self, task_id: str) -> None:
        """A consumer of this process joined the task's group."""
        self.watchers[task_id] = self.watchers.get(task_id, 0) + 1

    def unwatch(self, task_id: str) -> None:
        """A consumer left the task's group: with none left, messages stop arriving, so the view goes."""
        left = self.watchers.get(task_id, 0) - 1
        if left > 0:
            self.watchers[task_id] = left
            return
        self.watchers.pop(task_id, None)
        self.kept.pop(task_id, None)

    def seen(self, task_id: str, seq: int) -> None:
        """A message of the task arrived in this process: the kept view goes, whatever its seq.

        A newer seq makes the view old; a lower one means the task's state was reset (a database
        restored or replaced), which the next read finds and a resuming watcher is told of.
        """
        self.kept.pop(task_id, None)
        if task_id in self.reads:
            self.stale.add(task_id)

    async def get(self, task_id: str) -> View | None:
        """The task's view: kept, or read once for every consumer that asks meanwhile.

        A message that arrived while the shared read ran may be newer than what it read, and a
        consumer that joined the group after that message never receives it: then the read is not
        trusted, and each caller reads again.
        """
        view = self.kept.get(task_id)
        if view is not None:
            return view
        pending = self.reads.get(task_id)
        if pending is None:
            pending = self.reads[task_id] = asyncio.ensure_future(self._read(task_id))
        view, trusted = await asyncio.shield(pending)
        return view if trusted else await _load(task_id)

    async def _read(self, task_id: str) -> tuple[View | None, bool]:
        self.stale.discard(task_id)
        try:
            view = await _load(task_id)
        finally:
            del self.reads[task_id]
        trusted = task_id not in self.stale
        self.stale.discard(task_id)
        if view is not None and trusted and task_id in self.watchers:
            self.kept[task_id] = view
        return view, trusted

    async def fresh(self, task_id: str) -> View | None:
        """The task's view read now, for a watcher that claims to have seen more than the kept one."""
        view = await _load(task_id)
        kept = self.kept.get(task_id)
        if view is not None and kept is not None and view.seq > kept.seq:
            del self.kept[task_id]  # behind the database (a message lost on the way): read it again
        return view


class _Reader:
    """A loop's reads of views, batched: every task asked for while a read runs is in the next one, so
    a reconnect storm costs a statement per batch, not per socket. A read asked for begins after the
    ask (a caller after something fresher than what it holds gets it)."""

    def __init__(self) -> None:
        self.wanted: dict[str, asyncio.Future[View | None]] = {}
        self.running: asyncio.Task[None] | None = None

    def load(self, task_id: str) -> asyncio.Future[View | None]:
        wanted = self.wanted.get(task_id)
        if wanted is None:
            loop = asyncio.get_running_loop()
            wanted = self.wanted[task_id] = loop.create_future()
            if self.running is None:
                self.running = loop.create_task(self._run())
        return wanted

    async def _run(self) -> None:
        try:
            while self.wanted:
                await asyncio.sleep(0)  # the askers of this loop turn join the batch
                batch, self.wanted = self.wanted, {}
                try:
                    # In a worker thread of its own, beside the access checks on Django's shared one.
                    found = await adb_call(read_many, list(batch))
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for task_id, future in batch.items():
                    if not future.done():
                        future.set_result(found[task_id])
        finally:
            self.running = None


_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Reader] = weakref.WeakKeyDictionary()


async def _load(task_id: str) -> View | None:
    """The task's view, read after this call (in a batch with the other reads asked for meanwhile)."""
    loop = asyncio.get_running_loop()
    reader = _readers.get(loop)
    if reader is None:
        reader = _readers[loop] = _Reader()
    return await asyncio.shield(reader.load(task_id))


_views: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Views] = weakref.WeakKeyDictionary()


def views() -> Views:
    """The running loop's views (one per server process)."""
    loop = asyncio.get_running_loop()
    found = _views.get(loop)
    if found is None:
        found = _views[loop] = Views()
    return found
