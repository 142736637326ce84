"""Property: for any interleaving of reports, connects, disconnects and resumes, nothing is missed."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from progress import areport_error, areport_progress, arestart_task, report_error, report_progress
from progress.limits import open_sockets
from progress.models import Task, TaskEvent
from progress.schemas import (
    CancelledMessage,
    ErrorMessage,
    HeartbeatMessage,
    PongMessage,
    ProgressMessage,
    QueueMessage,
    SnapshotMessage,
    TaskStatus,
    parse_server_message,
)
from tests.conftest import ALL_STAGES, ORIGIN, application, with_token

pytestmark = pytest.mark.django_db(transaction=True)

STAGES = list(ALL_STAGES.working)
MAX_WATCHERS = 4
_task_ids = itertools.count()

Op = tuple[Any, ...]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("progress"), st.sampled_from(STAGES), st.integers(0, 100), st.booleans()),
        st.tuples(st.just("complete"), st.booleans()),
        st.tuples(st.just("error"), st.booleans()),
        st.tuples(st.just("restart")),
        st.tuples(st.just("connect"), st.booleans()),
        st.tuples(st.just("connect_racing"), st.sampled_from(STAGES), st.integers(0, 100), st.booleans()),
        st.tuples(st.just("disconnect"), st.integers(0, MAX_WATCHERS - 1)),
        st.tuples(st.just("resume"), st.integers(0, MAX_WATCHERS - 1), st.booleans()),
        st.tuples(st.just("settle")),
    ),
    min_size=1,
    max_size=24,
)


@dataclass
class Watcher:
    """One browser: every progress/error frame it got over all its connections, in order."""

    task_id: str
    baseline: int = -1
    """Seq of its first snapshot: everything before is in that snapshot's history."""
    last: int = 0
    frames: list[tuple[int, str]] = field(default_factory=list)
    socket: WebsocketCommunicator | None = None
    close_codes: list[int] = field(default_factory=list)

    async def open(self) -> None:
        """Connect: fresh (a snapshot) the first time, resuming from the last seq seen afterwards."""
        query = "" if self.baseline < 0 else f"?last_seq={self.last}"
        self.socket = WebsocketCommunicator(
            application(), with_token(f"/ws/tasks/{self.task_id}/{query}"), headers=[ORIGIN]
        )
        connected, _ = await self.socket.connect()
        assert connected

    async def first_frame(self) -> None:
        """Wait for the connection's first frame (a snapshot or a caught-up frame), if any comes."""
        if self.socket is not None and not await self.socket.receive_nothing(0.5):
            await self.take(wait=False, at_least_one=True)

    async def take(self, *, wait: bool, at_least_one: bool = False) -> None:
        """Process what arrived (and, with ``wait``, everything until the server closes)."""
        socket = self.socket
        while socket is not None and (wait or at_least_one or not socket.output_queue.empty()):
            at_least_one = False
            output = await socket.receive_output(10)
            if output["type"] == "websocket.close":
                self.close_codes.append(output.get("code", 1000))
                await self.drop()
                return
            self.handle(output["text"])

    def handle(self, text: str) -> None:
        message = parse_server_message(text)
        if isinstance(message, SnapshotMessage):
            assert self.baseline < 0, "a resumed connection must not start over with a snapshot"
            self.baseline = self.last = message.seq
            if message.status is not TaskStatus.RUNNING:
                self.last -= 1  # the terminal frame follows, with the snapshot's seq (documented)
        elif isinstance(message, ProgressMessage | ErrorMessage | CancelledMessage):
            assert message.seq > self.last, f"seq {message.seq} after {self.last}: duplicate or out of order"
            self.frames.append((message.seq, text))
            self.last = message.seq
        else:
            assert isinstance(message, HeartbeatMessage | PongMessage | QueueMessage), message  # no seq

    async def drop(self) -> None:
        """Disconnect, keeping the last seq seen for a later resume."""
        if self.socket is not None:
            await self.socket.disconnect()
            self.socket = None


async def _report(task_id: str, op: Op) -> None:
    kind = op[0]
    if kind == "progress":
        _, stage, pct, threaded = op
        if threaded:
            await asyncio.to_thread(report_progress, task_id, stage, pct)
        else:
            await areport_progress(task_id, stage, pct)
    elif kind == "complete":
        if op[1]:
            await asyncio.to_thread(report_progress, task_id, "complete", 100)
        else:
            await areport_progress(task_id, "complete", 100)
    elif kind == "error":
        if op[1]:
            await asyncio.to_thread(report_error, task_id, "decode_failed", "We could not read the audio.")
        else:
            await areport_error(task_id, "decode_failed", "We could not read the audio.")
    elif kind == "restart":
        await arestart_task(task_id)


async def _play(task_id: str, script: list[Op]) -> list[Watcher]:
    watchers: list[Watcher] = []
    for op in script:
        kind = op[0]
        if kind == "connect" and len(watchers) < MAX_WATCHERS:
            watchers.append(Watcher(task_id))
            await watchers[-1].open()
            if op[1]:
                await watchers[-1].first_frame()
        elif kind == "connect_racing" and len(watchers) < MAX_WATCHERS:
            # A report lands while the watcher joins: between group_add and the snapshot read.
            watchers.append(Watcher(task_id))
            await asyncio.gather(watchers[-1].open(), _report(task_id, ("progress", *op[1:])))
        elif kind in ("disconnect", "resume") and watchers:
            watcher = watchers[op[1] % len(watchers)]
            await watcher.take(wait=False)
            await watcher.drop()
            if kind == "resume":
                await watcher.open()
                if op[2]:
                    await watcher.first_frame()
        elif kind == "settle":
            await asyncio.sleep(0.01)
        else:
            await _report(task_id, op)
        for watcher in watchers:
            await watcher.take(wait=False)
    return watchers


async def _finish(task_id: str, watchers: list[Watcher]) -> int:
    """Complete the task (retrying it if it failed: its watchers stay for that), then let every watcher
    (reconnecting if it must) run to the server's close."""
    if await Task.objects.filter(pk=task_id, status="failed").aexists():
        await arestart_task(task_id)
    if await Task.objects.filter(pk=task_id, status="running").aexists():
        await areport_progress(task_id, "complete", 100)
    final = (await Task.objects.aget(pk=task_id)).seq
    for watcher in watchers:
        await watcher.take(wait=True)
        if watcher.last < final:
            await watcher.open()
            await watcher.take(wait=True)
    return final


async def _check(script: list[Op]) -> None:
    """Play one script on a new task; every watcher must have got everything, once, in order."""
    task_id = f"prop{next(_task_ids)}"
    # Hypothesis seeds the random module the same way for every example, and InMemoryChannelLayer
    # names channels with it: a consumer still closing from the last example shared a channel name
    # with a new one and handed it the old task's frames. A seed per task keeps names apart.
    random.seed(task_id)
    await areport_progress(task_id, "queued", 0)
    watchers = await _play(task_id, script)
    try:
        final = await _finish(task_id, watchers)
    finally:
        for watcher in watchers:
            await watcher.drop()
    events = {
        seq: payload
        async for seq, payload in TaskEvent.objects.filter(task_id=task_id).values_list("seq", "payload")
    }
    for watcher in watchers:
        seqs = [seq for seq, _ in watcher.frames]
        assert seqs == sorted(set(seqs))
        # Gap-free: every stage change, retry and terminal message after its snapshot, exactly as stored.
        assert {s for s in events if s > watcher.baseline} <= set(seqs)
        assert all(text == events[seq] for seq, text in watcher.frames if seq in events)
        # Ends with the final state, and a normal close.
        assert watcher.last == final
        assert watcher.frames[-1][1] == events[final] if watcher.frames else watcher.baseline == final
        assert watcher.close_codes[-1] == 1000
    # Every closed socket gave back its address's slot (its cleanup ran, however its loop ended).
    for _ in range(100):
        if not open_sockets.counts.get("unknown"):
            break
        await asyncio.sleep(0.02)
    assert open_sockets.counts.get("unknown", 0) == 0, open_sockets.counts


_examples = hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_rates = st.sampled_from([0, 50])
_heartbeats = st.sampled_from([3600, 0.02])


@_examples
@given(script=ops, rate=_rates, heartbeat=_heartbeats)
async def test_delivery_property_no_watcher_misses_anything(settings, script, rate, heartbeat):
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": rate, "HEARTBEAT_INTERVAL": heartbeat}
    await _check(script)


@pytest.mark.redis
@hypothesis_settings(_examples, max_examples=25)
@given(script=ops, rate=_rates, heartbeat=_heartbeats)
async def test_delivery_property_on_redis_layer(settings, any_redis_layer, script, rate, heartbeat):
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": rate, "HEARTBEAT_INTERVAL": heartbeat}
    await _check(script)
