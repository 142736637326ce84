"""The Redis channel layer for real: group fan-out, 200 simultaneous connects to daphne, idle heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from progress import areport_progress
from progress.schemas import (
    HeartbeatMessage,
    PongMessage,
    ProgressMessage,
    SnapshotMessage,
    parse_server_message,
)
from tests import processes
from tests.conftest import RedisServer, output, quiet, receive, watching

pytestmark = pytest.mark.redis


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_progress")
async def test_redis_layer_group_fan_out(any_redis_layer: RedisServer):
    await areport_progress("job1", "queued", 0)
    await areport_progress("job2", "queued", 0)
    async with (
        watching("/ws/tasks/job1/") as a,
        watching("/ws/tasks/job1/") as b,
        watching("/ws/tasks/job2/") as c,
    ):
        for client in (a, b, c):
            assert isinstance(await receive(client), SnapshotMessage)
        await areport_progress("job1", "transcribing", 10)
        for client in (a, b):
            message = await receive(client, timeout=10)
            assert isinstance(message, ProgressMessage)
            assert (message.task_id, message.seq, message.percentage) == ("job1", 2, 10)
        assert await quiet(c, 0.5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_progress")
async def test_redis_layer_core_restart_closes_4503_and_resume_catches_up(redis_layer: RedisServer):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        await asyncio.to_thread(redis_layer.stop)
        assert await output(client, 40) == {"type": "websocket.close", "code": 4503}
        await areport_progress("job1", "transcribing", 10)  # stored; its fan-out fails
    await asyncio.to_thread(redis_layer.start)  # empty: every group membership is gone
    # As a client does: the pool's stale connections may fail a socket again (4503) until each has
    # been tried; every time, it resumes from the last seq it saw, and nothing is missed.
    seen: list[tuple[int, int]] = []
    last_seq, refused, reported = snapshot.seq, 0, False
    while len(seen) < 2:
        async with watching(f"/ws/tasks/job1/?last_seq={last_seq}") as client:
            while len(seen) < 2:
                sent = await output(client, 10)
                if sent["type"] == "websocket.close":
                    assert sent["code"] == 4503
                    refused += 1
                    assert refused < 20
                    await asyncio.sleep(0.2)
                    break
                frame = parse_server_message(sent["text"])
                assert isinstance(frame, ProgressMessage)
                seen.append((frame.seq, frame.percentage))
                last_seq = frame.seq
                if not reported:
                    reported = True
                    await areport_progress("job1", "transcribing", 20)
    assert seen == [(2, 10), (3, 20)]


@pytest.mark.django_db(transaction=True)
async def test_redis_layer_pubsub_restart_keeps_the_socket_and_loses_nothing(
    pubsub_layer: RedisServer, settings
):
    # Pub/sub holds no state in Redis: the layer subscribes again, and the heartbeat's seq check
    # brings back what was published while Redis was away.
    async with _update_lost_while_redis_away(pubsub_layer, settings, heartbeat=2) as client:
        missed = await _next_progress(client)
        assert (missed.seq, missed.percentage) == (2, 10)
        # Live again once the layer has subscribed anew: three in a row arrive far sooner than
        # the next heartbeat could bring them.
        quick = 0
        for percentage in range(11, 60):
            started = time.monotonic()
            await areport_progress("job1", "transcribing", percentage)
            message = await _next_progress(client)
            assert (message.seq, message.percentage) == (percentage - 8, percentage)
            quick = quick + 1 if time.monotonic() - started < 0.3 else 0
            if quick == 3:
                break
        assert quick == 3


@pytest.mark.django_db(transaction=True)
async def test_redis_layer_pubsub_back_catches_up_before_any_heartbeat(pubsub_layer: RedisServer, settings):
    # The last update of a job may be published while Redis is away (a failover): nothing later
    # shows the gap, so the layer's "resumed" notice makes every socket look at once.
    async with _update_lost_while_redis_away(pubsub_layer, settings, heartbeat=3600) as client:
        missed = await receive(client, timeout=20)
        assert isinstance(missed, ProgressMessage)
        assert (missed.seq, missed.percentage) == (2, 10)


@contextlib.asynccontextmanager
async def _update_lost_while_redis_away(
    layer: RedisServer, settings: Any, heartbeat: float
) -> AsyncIterator[Any]:
    """A watcher of job1, in sync; then Redis stops, job1 reports 10% (stored, its fan-out lost) and
    Redis starts again."""
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": 0, "HEARTBEAT_INTERVAL": heartbeat}
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        assert isinstance(await receive(client), SnapshotMessage)
        await asyncio.to_thread(layer.stop)
        await areport_progress("job1", "transcribing", 10)
        await asyncio.to_thread(layer.start)
        yield client


async def _next_progress(client: Any, timeout: float = 20) -> ProgressMessage:
    """The next progress frame, skipping heartbeats."""
    while True:
        message = await receive(client, timeout=timeout)
        if isinstance(message, ProgressMessage):
            return message
        assert isinstance(message, HeartbeatMessage)


@pytest.fixture
def daphne_on_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[processes.Server]:
    """A real daphne process on the Redis layer with a migrated SQLite file and a task ``load``."""
    env = processes.project_env(
        tmp_path,
        REDIS_URL=redis_server.url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PROGRESS_HEARTBEAT_INTERVAL="1",
        PROGRESS_MAX_CONNECTIONS_PER_CLIENT="0",  # hundreds of watchers from one loopback address
    )
    processes.migrate(env)
    processes.manage(["report_progress", "load", "queued", "0"], env)
    with processes.daphne(env, tmp_path / "daphne.log") as server:
        yield server


@pytest.mark.e2e
@pytest.mark.slow
async def test_redis_layer_200_simultaneous_connects_then_fan_out(daphne_on_redis: processes.Server):
    server, count = daphne_on_redis, 200
    snapshots: list[SnapshotMessage] = []
    all_connected = asyncio.Event()

    async def watcher() -> ProgressMessage:
        async with server.connect("/ws/tasks/load/", ping_interval=None) as ws:
            first = parse_server_message(await asyncio.wait_for(ws.recv(), 120))
            assert isinstance(first, SnapshotMessage)
            snapshots.append(first)
            if len(snapshots) == count:
                all_connected.set()
            while True:
                message = parse_server_message(await asyncio.wait_for(ws.recv(), 120))
                if isinstance(message, ProgressMessage):
                    return message

    tasks = [asyncio.create_task(watcher()) for _ in range(count)]
    connected = asyncio.create_task(all_connected.wait())
    await asyncio.wait([connected, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t.exception() for t in tasks if t.done()]
    for task in (connected, *tasks):
        if failed:
            task.cancel()
    assert failed == [], f"{len(failed)} of {count} connects failed: {failed[:3]}\n{server.log()[-3000:]}"
    # All 200 sockets are up; a report from another process (as a Celery worker) reaches every one.
    await asyncio.to_thread(processes.manage, ["report_progress", "load", "transcribing", "10"], server.env)
    arrived = await asyncio.gather(*tasks)
    assert [s.seq for s in snapshots] == [1] * count
    assert [(m.seq, m.percentage) for m in arrived] == [(2, 10)] * count
    assert "Traceback" not in server.log()


@pytest.mark.e2e
@pytest.mark.slow
async def test_redis_layer_idle_connection_stays_open_with_heartbeats(daphne_on_redis: processes.Server):
    async with daphne_on_redis.connect("/ws/tasks/load/", ping_interval=None) as ws:
        assert isinstance(parse_server_message(await ws.recv()), SnapshotMessage)
        loop = asyncio.get_running_loop()
        started, beats = loop.time(), 0
        while loop.time() - started < 11:
            message = parse_server_message(await asyncio.wait_for(ws.recv(), 10))
            assert isinstance(message, HeartbeatMessage)
            beats += 1
        # About one a second for 11 s; a loaded machine may delay some, none may be missing entirely.
        assert beats >= 7
        await ws.send('{"type": "ping"}')
        reply = parse_server_message(await asyncio.wait_for(ws.recv(), 10))
        while isinstance(reply, HeartbeatMessage):
            reply = parse_server_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(reply, PongMessage)
    assert "1011" not in daphne_on_redis.log()
