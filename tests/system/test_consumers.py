"""The WebSocket consumer: fan-out, heartbeat, ping, bad frames, snapshots and resume."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import re_path

from progress import areport_error, areport_progress, arestart_task, consumers, report_progress
from progress.consumers import TaskProgressConsumer
from progress.schemas import (
    ErrorMessage,
    HeartbeatMessage,
    PongMessage,
    ProgressMessage,
    ProtocolErrorCode,
    ProtocolErrorMessage,
    SnapshotMessage,
    TaskStatus,
)
from tests.conftest import ORIGIN, RedisServer, application, quiet, receive, watching, with_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


class _Kept(TaskProgressConsumer):
    """The consumer, keeping each instance so a test can look at its heartbeat timer."""

    made: ClassVar[list[TaskProgressConsumer]] = []

    async def connect(self) -> None:
        type(self).made.append(self)
        await super().connect()


@asynccontextmanager
async def kept(task_id: str) -> AsyncIterator[tuple[WebsocketCommunicator, TaskProgressConsumer]]:
    """A connected watcher of ``task_id`` and its consumer instance."""
    _Kept.made.clear()
    app: Any = URLRouter([re_path(r"^ws/tasks/(?P<task_id>[^/]+)/$", _Kept.as_asgi())])
    client = WebsocketCommunicator(app, with_token(f"/ws/tasks/{task_id}/"))
    connected, _ = await client.connect()
    assert connected
    try:
        yield client, _Kept.made[0]
    finally:
        await client.disconnect()


async def test_consumer_two_watchers_both_receive(fast_progress):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as a, watching("/ws/tasks/job1") as b:
        assert isinstance(await receive(a), SnapshotMessage)
        assert isinstance(await receive(b), SnapshotMessage)
        await areport_progress("job1", "transcribing", 10)
        for client in (a, b):
            message = await receive(client)
            assert isinstance(message, ProgressMessage)
            assert (message.stage, message.percentage) == ("transcribing", 10)


async def test_consumer_other_task_receives_nothing():
    await areport_progress("job1", "queued", 0)
    await areport_progress("job2", "queued", 0)
    async with watching("/ws/tasks/job2/") as other:
        await receive(other)
        await areport_progress("job1", "transcribing", 5)
        assert await quiet(other, 0.3)


async def test_consumer_heartbeat_at_configured_interval(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.2}
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        # Two within receive()'s timeout: at the default 30 s interval none would come.
        beats = [await receive(client), await receive(client)]
        assert all(isinstance(b, HeartbeatMessage) for b in beats)


async def test_consumer_heartbeat_keeps_a_fixed_cadence(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.25}
    await areport_progress("job1", "queued", 0)
    loop = asyncio.get_running_loop()
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        arrivals = []
        for _ in range(5):
            assert isinstance(await receive(client), HeartbeatMessage)
            arrivals.append(loop.time())
        # Four intervals after the first beat, give or take a loaded machine, not drifting later.
        assert 0.75 < arrivals[-1] - arrivals[0] < 1.75


async def test_consumer_heartbeat_waits_in_the_wheel_not_a_task(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.2}
    await areport_progress("job1", "queued", 0)
    async with kept("job1") as (client, consumer):
        await receive(client)
        beat = consumer.heartbeat
        assert beat is not None
        assert beat.slot is not None
        assert beat.wheel is not None
        assert consumer.inbox in beat.wheel.slots[beat.slot]
        assert isinstance(await receive(client), HeartbeatMessage)
        files = [getattr(task.get_coro(), "cr_code", None) for task in asyncio.all_tasks()]
        assert consumers.__file__ not in [code.co_filename for code in files if code is not None]


async def test_consumer_heartbeat_leaves_the_wheel_on_disconnect(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.2}
    await areport_progress("job1", "queued", 0)
    async with kept("job1") as (client, consumer):
        await receive(client)
        assert consumer.heartbeat is not None
        timers = consumer.heartbeat.wheel
        assert timers is not None
        assert len(timers) == 1
    assert not consumer.heartbeat.running
    assert len(timers) == 0


async def test_consumer_heartbeat_leaves_the_wheel_when_task_finishes(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.2}
    await areport_progress("job1", "queued", 0)
    async with kept("job1") as (client, consumer):
        await receive(client)
        assert consumer.heartbeat is not None
        timers = consumer.heartbeat.wheel
        assert timers is not None
        await areport_progress("job1", "complete", 100)
        assert isinstance(await receive(client), ProgressMessage)
        assert (await client.receive_output(3)) == {"type": "websocket.close", "code": 1000}
        assert len(timers) == 0
        assert await quiet(client, 0.5)


async def test_consumer_heartbeat_takes_its_turn_in_a_burst():
    await areport_progress("job1", "queued", 0)
    async with kept("job1") as (client, consumer):
        await receive(client)
        # The heartbeat comes due in the middle of a burst: it goes out whole, between two frames.
        for pct in range(1, 6):
            await areport_progress("job1", "transcribing", pct)
            if pct == 3:
                consumer.inbox.put({"type": "heartbeat.tick"})
        got = [await receive(client)]
        while not isinstance(got[-1], ProgressMessage) or got[-1].seq < 6:
            got.append(await receive(client))
        assert sum(isinstance(m, HeartbeatMessage) for m in got) == 1
        # Its check for missed messages may see seqs still in flight and catch up (the latest
        # progress, skipping older progress), so the seqs rise but some may be left out.
        seqs = [m.seq for m in got if isinstance(m, ProgressMessage)]
        assert seqs == sorted(set(seqs))
        assert seqs[-1] == 6


async def test_consumer_ping_pong():
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await client.send_to(text_data='{"type": "ping"}')
        assert isinstance(await receive(client), PongMessage)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", ProtocolErrorCode.MALFORMED_JSON),
        ("[]", ProtocolErrorCode.NOT_AN_OBJECT),
        ('"x"', ProtocolErrorCode.NOT_AN_OBJECT),
        ('{"type": "subscribe"}', ProtocolErrorCode.UNKNOWN_TYPE),
        ("{}", ProtocolErrorCode.UNKNOWN_TYPE),
        ('{"type": "ping", "pad": "' + "x" * 5000 + '"}', ProtocolErrorCode.FRAME_TOO_LARGE),
    ],
)
async def test_consumer_bad_frame_gets_error_and_stays_open(frame, code):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await client.send_to(text_data=frame)
        reply = await receive(client)
        assert isinstance(reply, ProtocolErrorMessage)
        assert reply.code is code
        await client.send_to(text_data='{"type": "ping"}')
        assert isinstance(await receive(client), PongMessage)


async def test_consumer_binary_frame_gets_error():
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await client.send_to(bytes_data=b"\x00\x01")
        reply = await receive(client)
        assert isinstance(reply, ProtocolErrorMessage)
        assert reply.code is ProtocolErrorCode.BINARY_FRAME


@pytest.mark.parametrize("path", ["/ws/tasks/bad%20id/", "/ws/tasks/" + "a" * 65 + "/", "/ws/nothing/"])
async def test_consumer_bad_task_id_refused_at_handshake(path):
    from channels.testing import WebsocketCommunicator

    communicator = WebsocketCommunicator(application(), path, headers=[(b"origin", b"http://127.0.0.1")])
    connected, _ = await communicator.connect()
    assert not connected


async def test_consumer_foreign_origin_refused():
    from channels.testing import WebsocketCommunicator

    communicator = WebsocketCommunicator(
        application(), "/ws/tasks/job1/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_consumer_unknown_task_closes_4404():
    async with watching("/ws/tasks/nobody/") as client:
        assert (await client.receive_output(3)) == {"type": "websocket.close", "code": 4404}


async def test_consumer_sync_report_from_thread_reaches_watchers():
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        worker = threading.Thread(target=report_progress, args=("job1", "transcribing", 42, "chunk 1"))
        worker.start()
        await asyncio.to_thread(worker.join)
        message = await receive(client)
        assert isinstance(message, ProgressMessage)
        assert (message.percentage, message.message) == (42, "chunk 1")


async def test_consumer_error_keeps_the_socket_for_a_retry():
    await areport_progress("job1", "transcribing", 30)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await areport_error("job1", "decode_failed", "We could not read the audio.", "Traceback ...")
        message = await receive(client)
        assert isinstance(message, ErrorMessage)
        assert message.error_code == "decode_failed"
        assert await quiet(client, 0.2)
        assert await arestart_task("job1", "retrying") == 2
        retried = await receive(client)
        assert isinstance(retried, ProgressMessage)
        assert (retried.attempt, retried.stage, retried.message) == (2, "queued", "retrying")
        await areport_progress("job1", "complete", 100)
        done = await receive(client)
        assert isinstance(done, ProgressMessage)
        assert (done.attempt, done.stage) == (2, "complete")
        assert (await client.receive_output(3)) == {"type": "websocket.close", "code": 1000}


async def test_consumer_late_watcher_of_failed_task_gets_error_and_stays():
    await areport_progress("job1", "transcribing", 30)
    await areport_error("job1", "decode_failed", "We could not read the audio.")
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        assert snapshot.status == "failed"
        assert isinstance(await receive(client), ErrorMessage)
        assert await quiet(client, 0.2)
        await arestart_task("job1")
        retried = await receive(client)
        assert isinstance(retried, ProgressMessage)
        assert retried.attempt == 2


async def test_consumer_late_joiner_gets_snapshot_with_every_stage():
    for stage, pct in [("queued", 0), ("transcribing", 50), ("aligning", 10), ("diarizing", 0)]:
        await areport_progress("job1", stage, pct)
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        assert [h.stage for h in snapshot.history] == [
            "queued",
            "transcribing",
            "aligning",
            "diarizing",
        ]
        assert snapshot.status is TaskStatus.RUNNING
        await areport_progress("job1", "complete", 100)
        done = await receive(client)
        assert isinstance(done, ProgressMessage)
        assert done.seq == snapshot.seq + 1
        assert done.stage == "complete"


async def test_consumer_resume_from_future_seq_gets_error_then_snapshot():
    for stage in ("queued", "transcribing", "aligning"):
        await areport_progress("job1", stage, 0)
    async with watching("/ws/tasks/job1/?last_seq=99") as client:
        reply = await receive(client)
        assert isinstance(reply, ProtocolErrorMessage)
        assert reply.code is ProtocolErrorCode.BAD_LAST_SEQ
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        assert snapshot.seq == 3
        await areport_progress("job1", "diarizing", 0)
        live = await receive(client)
        assert isinstance(live, ProgressMessage)
        assert live.seq == 4


async def test_consumer_resume_with_bad_last_seq_gets_error_then_snapshot():
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/?last_seq=-1") as client:
        reply = await receive(client)
        assert isinstance(reply, ProtocolErrorMessage)
        assert reply.code is ProtocolErrorCode.BAD_LAST_SEQ
        assert isinstance(await receive(client), SnapshotMessage)


async def test_consumer_disconnect_leaves_group_and_publishing_still_works():
    from channels.layers import get_channel_layer

    from progress.store import group_name

    await areport_progress("job1", "queued", 0)
    layer = get_channel_layer()
    async with watching("/ws/tasks/job1/") as stays:
        await receive(stays)
        async with watching("/ws/tasks/job1/") as leaves:
            await receive(leaves)
            assert layer.groups.get(group_name("job1"))
        assert await areport_progress("job1", "transcribing", 10)
        message = await receive(stays)
        assert isinstance(message, ProgressMessage)
        assert message.seq == 2
    assert not layer.groups.get(group_name("job1"))
    assert await areport_progress("job1", "transcribing", 20)
    async with watching("/ws/tasks/job1/?last_seq=2") as back:
        message = await receive(back)
        assert isinstance(message, ProgressMessage)
        assert (message.seq, message.percentage) == (3, 20)


async def test_consumer_too_many_bad_frames_closes_4008(settings):
    settings.PROGRESS = {**settings.PROGRESS, "MAX_PROTOCOL_ERRORS": 3, "HEARTBEAT_INTERVAL": 3600}
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        for _ in range(3):
            await client.send_to(text_data="{nope")
        codes = [await receive(client) for _ in range(4)]
        assert [c.code for c in codes if isinstance(c, ProtocolErrorMessage)] == [
            ProtocolErrorCode.MALFORMED_JSON,
            ProtocolErrorCode.MALFORMED_JSON,
            ProtocolErrorCode.MALFORMED_JSON,
            ProtocolErrorCode.TOO_MANY_ERRORS,
        ]
        assert await client.receive_output(3) == {"type": "websocket.close", "code": 4008}


@pytest.fixture
def pubsub_layer(redis_server: RedisServer, settings: Any) -> RedisServer:
    """The default channel layer as REDIS_LAYER=pubsub makes it: PubSubChannelLayer on a real Redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "progress.layers.PubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_server.url, "socket_timeout": 30}]},
        }
    }
    channel_layers.backends = {}
    return redis_server


def _readers() -> int:
    names = {"read_into", "_pull"}
    return sum(getattr(t.get_coro(), "__name__", "") in names for t in asyncio.all_tasks())


@pytest.mark.redis
async def test_consumer_pushing_layer_delivers_in_order_without_a_reader(pubsub_layer: RedisServer):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        assert isinstance(await receive(client), SnapshotMessage)
        assert _readers() == 1  # the client's; the layer puts channel messages into the inbox itself
        for pct in range(1, 41):
            await areport_progress("job1", "transcribing", pct)
        got = [await receive(client, timeout=10) for _ in range(40)]
        assert [(m.seq, m.percentage) for m in got if isinstance(m, ProgressMessage)] == [
            (pct + 1, pct) for pct in range(1, 41)
        ]


@pytest.mark.redis
async def test_consumer_pushing_layer_forgets_the_channel_on_disconnect(pubsub_layer: RedisServer):
    from channels.layers import get_channel_layer

    await areport_progress("job1", "queued", 0)
    async with kept("job1") as (client, consumer):
        await receive(client)
        inner = get_channel_layer().state()
        assert consumer.channel_name in inner.channels
    assert consumer.channel_name not in inner.channels
    assert not inner.groups.get(consumer.group)


@pytest.mark.redis
async def test_consumer_pushing_layer_down_at_connect_closes_4503(pubsub_layer: RedisServer):
    await areport_progress("job1", "queued", 0)
    await asyncio.to_thread(pubsub_layer.stop)
    communicator = WebsocketCommunicator(application(), with_token("/ws/tasks/job1/"), headers=[ORIGIN])
    connected, code = await communicator.connect(10)
    assert (connected, code) == (True, None)
    assert await communicator.receive_output(10) == {"type": "websocket.close", "code": 4503}


async def test_consumer_in_memory_layer_keeps_a_channel_reader():
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        assert isinstance(await receive(client), SnapshotMessage)
        assert _readers() == 2  # InMemoryChannelLayer cannot push: its channel is read by a task
        for pct in range(1, 6):
            await areport_progress("job1", "transcribing", pct)
        got = [await receive(client) for _ in range(5)]
        assert [m.seq for m in got if isinstance(m, ProgressMessage)] == [2, 3, 4, 5, 6]


async def test_consumer_freed_on_close_without_a_garbage_collection():
    from progress import shutdown

    await areport_progress("freed1", "queued", 0)
    gc.collect()
    gc.disable()  # the servers' GC policy makes full collections rare: closing must free the socket
    try:
        async with watching("/ws/tasks/freed1/") as client:
            await receive(client)
            (consumer,) = [c for c in shutdown._open if getattr(c, "task_id", None) == "freed1"]
            ref = weakref.ref(consumer)
            del consumer
        await asyncio.sleep(0.1)
        assert ref() is None
    finally:
        gc.enable()
