"""The consumer against hostile clients: refusals that reveal nothing, floods, bombs, socket limits."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from progress import areport_progress, astart_task, watch_token
from progress.access import SESSION_OWNER_KEY
from progress.consumers import TaskProgressConsumer
from progress.limits import open_sockets
from progress.schemas import (
    PongMessage,
    ProgressMessage,
    ProtocolErrorCode,
    ProtocolErrorMessage,
    SnapshotMessage,
    parse_server_message,
)
from tests.conftest import ORIGIN, application, receive, watching, with_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


async def first_output(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """What a client sees first after the handshake on ``path`` (no token added)."""
    communicator = WebsocketCommunicator(application(), path, headers=[ORIGIN, *(headers or [])])
    connected, _ = await communicator.connect(5)
    assert connected
    try:
        output: dict[str, Any] = await communicator.receive_output(5)
        return output
    finally:
        await communicator.disconnect()


async def test_hostile_refusals_look_alike(settings):
    await areport_progress("job1", "queued", 0)
    await areport_progress("job2", "queued", 0)
    good = watch_token("job1")
    settings.PROGRESS = {**settings.PROGRESS, "WATCH_TOKEN_MAX_AGE": 1, "HEARTBEAT_INTERVAL": 3600}
    expired = watch_token("job1")
    await asyncio.sleep(2.1)
    paths = [
        "/ws/tasks/job1/",
        f"/ws/tasks/job1/?token={good[:-1]}{'A' if good[-1] != 'A' else 'B'}",
        f"/ws/tasks/job1/?token={expired}",
        f"/ws/tasks/job1/?token={watch_token('job2')}",
        f"/ws/tasks/job1/?last_seq=0&token={'x' * 4000}",
        "/ws/tasks/nobody/",
        f"/ws/tasks/nobody/?token={watch_token('nobody')}",
    ]
    seen = [await first_output(path) for path in paths]
    assert seen == [{"type": "websocket.close", "code": 4404}] * len(paths)


async def test_hostile_owner_watches_with_the_session_cookie(settings):
    session = SessionStore()
    session[SESSION_OWNER_KEY] = "owner-1"
    await asyncio.to_thread(session.save)
    task_id = await astart_task("queued", owner="session:owner-1")
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode())
    first = await first_output(f"/ws/tasks/{task_id}/", [cookie])
    assert isinstance(parse_server_message(first["text"]), SnapshotMessage)
    stranger = (b"cookie", f"{settings.SESSION_COOKIE_NAME}=notasession".encode())
    assert await first_output(f"/ws/tasks/{task_id}/", [stranger]) == {
        "type": "websocket.close",
        "code": 4404,
    }


@pytest.mark.parametrize(
    "frame",
    ["[" * 4000, '{"a":' * 1500, "1" * 4000, '{"type": ' + "[" * 1000 + "]" * 1000 + "}", "\ud800"],
)
async def test_hostile_bombs_get_a_protocol_error_and_the_socket_lives(frame):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await client.send_to(text_data=frame)
        reply = await receive(client)
        assert isinstance(reply, ProtocolErrorMessage)
        await client.send_json_to({"type": "ping"})
        assert isinstance(await receive(client), PongMessage)


async def test_hostile_flood_is_closed_4008(settings):
    settings.PROGRESS = {
        **settings.PROGRESS,
        "CLIENT_FRAME_BURST": 10,
        "CLIENT_FRAMES_PER_SECOND": 1,
        "HEARTBEAT_INTERVAL": 3600,
    }
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        for _ in range(30):
            await client.send_json_to({"type": "ping"})
        replies = []
        while (output := await client.receive_output(3))["type"] == "websocket.send":
            replies.append(parse_server_message(output["text"]))
        assert output == {"type": "websocket.close", "code": 4008}
        assert [type(r) for r in replies] == [PongMessage] * 10 + [ProtocolErrorMessage]
        assert isinstance(replies[-1], ProtocolErrorMessage)
        assert replies[-1].code is ProtocolErrorCode.TOO_MANY_FRAMES


async def test_hostile_bucket_refills_at_the_rate(settings):
    settings.PROGRESS = {
        **settings.PROGRESS,
        "CLIENT_FRAME_BURST": 2,
        "CLIENT_FRAMES_PER_SECOND": 20,
        "HEARTBEAT_INTERVAL": 3600,
    }
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        for _ in range(6):
            await client.send_json_to({"type": "ping"})
            assert isinstance(await receive(client), PongMessage)
            await asyncio.sleep(0.06)


async def test_hostile_sockets_per_address_are_limited(settings):
    settings.PROGRESS = {**settings.PROGRESS, "MAX_CONNECTIONS_PER_CLIENT": 2, "HEARTBEAT_INTERVAL": 3600}
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as a, watching("/ws/tasks/job1/") as b:
        await receive(a)
        await receive(b)
        assert await first_output(f"/ws/tasks/job1/?token={watch_token('job1')}") == {
            "type": "websocket.close",
            "code": 4029,
        }
    # Both closed: their slots are free again.
    async with watching("/ws/tasks/job1/") as c:
        assert isinstance(await receive(c), SnapshotMessage)
    assert open_sockets.counts == {}


class _Broken(TaskProgressConsumer):
    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        raise RuntimeError("a bug in a handler")


async def test_hostile_a_failing_handler_still_cleans_up(monkeypatch):
    monkeypatch.setattr(TaskProgressConsumer, "receive", _Broken.receive)
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        await client.send_json_to({"type": "ping"})
        assert await client.receive_output(3) == {"type": "websocket.close", "code": 1011}
        await asyncio.sleep(0.05)
        layer: Any = get_channel_layer()
        assert not layer.groups.get("task.job1")
        assert open_sockets.counts == {}


frames = st.one_of(
    st.text(max_size=300).map(lambda t: ("text", t)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.integers(1, 3000).map(lambda n: ("text", "[" * n)),
    st.integers(1, 3000).map(lambda n: ("text", "{" + '"a":{' * n)),
    st.integers(4000, 9000).map(lambda n: ("text", "9" * n)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children),
        max_leaves=20,
    ).map(lambda v: ("text", json.dumps(v))),
    st.just(("text", '{"type": "ping"}')),
)


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(frames, min_size=1, max_size=40))
async def test_hostile_fuzzed_frames_never_break_the_consumer_nor_a_good_watcher(settings, script):
    settings.PROGRESS = {
        **settings.PROGRESS,
        "MAX_UPDATES_PER_SECOND": 0,
        "HEARTBEAT_INTERVAL": 3600,
        "MAX_PROTOCOL_ERRORS": 20,
    }
    task_id = await astart_task("transcribing")
    async with watching(f"/ws/tasks/{task_id}/") as good, watching(f"/ws/tasks/{task_id}/") as bad:
        await receive(good)
        await receive(bad)
        for i, (kind, value) in enumerate(script):
            await bad.send_input({"type": "websocket.receive", kind: value})  # empty frames too
            await areport_progress(task_id, "transcribing", min(99, i + 1))
        closed = None
        replies = 0
        while True:
            output = await bad.receive_output(3)
            if output["type"] == "websocket.close":
                closed = output["code"]
                break
            message = parse_server_message(output["text"])
            if isinstance(message, PongMessage | ProtocolErrorMessage):
                replies += 1
            if replies == len(script):
                break
        assert closed in (None, 4008)  # every frame answered, or the documented policy close
        got = [await receive(good) for _ in script]
        assert [m.percentage for m in got if isinstance(m, ProgressMessage)] == [
            min(99, i + 1) for i in range(len(script))
        ]
    assert open_sockets.counts == {}


async def test_hostile_reconnect_after_close_keeps_every_stage():
    # A watcher closed for a limit resumes with ?last_seq= and misses nothing.
    task_id = await astart_task("queued")
    async with watching(f"/ws/tasks/{task_id}/") as client:
        first = await receive(client)
        assert isinstance(first, SnapshotMessage)
    for stage in ("transcribing", "aligning"):
        await areport_progress(task_id, stage, 10)
    started = time.monotonic()
    async with watching(f"/ws/tasks/{task_id}/?last_seq={first.seq}") as client:
        got = [await receive(client) for _ in range(2)]
    assert [m.stage for m in got if isinstance(m, ProgressMessage)] == ["transcribing", "aligning"]
    assert time.monotonic() - started < 30


def served_by(task_id: str, send: Any) -> asyncio.Task[None]:
    """A watcher of ``task_id`` whose server sends through ``send`` (a test's stand-in for a socket)."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "websocket.connect"})
    scope = {
        "type": "websocket",
        "path": f"/ws/tasks/{task_id}/",
        "query_string": f"token={watch_token(task_id)}".encode(),
        "headers": [ORIGIN],
        "client": ("10.0.0.9", 5000),
    }
    return asyncio.create_task(application()(scope, incoming.get, send))


async def test_hostile_client_that_stops_reading_is_dropped(settings, caplog):
    settings.PROGRESS = {
        **settings.PROGRESS,
        "MAX_UPDATES_PER_SECOND": 0,
        "HEARTBEAT_INTERVAL": 3600,
        "MAX_QUEUED_BYTES": 3000,
    }
    task_id = await astart_task("transcribing")
    sent: list[dict[str, Any]] = []
    stuck = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        # A server whose socket buffer is full: after the snapshot, send waits for ever.
        sent.append(message)
        if message["type"] == "websocket.send":
            await stuck.wait()

    consumer = served_by(task_id, send)
    async with watching(f"/ws/tasks/{task_id}/") as good:
        await receive(good)
        for pct in range(1, 60):
            await areport_progress(task_id, "transcribing", pct, "x" * 200)
        await asyncio.wait_for(consumer, 10)  # the stuck one ends by itself
        got = [await receive(good) for _ in range(59)]
    assert [m.percentage for m in got if isinstance(m, ProgressMessage)] == list(range(1, 60))
    assert "did not take its frames" in caplog.text
    assert sent[-1] == {"type": "websocket.close", "code": 4013}  # said, where the socket can take it
    assert open_sockets.counts == {}
    layer: Any = get_channel_layer()
    assert not layer.groups.get(f"task.{task_id}")


async def test_hostile_client_gone_mid_send_ends_quietly(caplog):
    task_id = await astart_task("transcribing")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" and '"progress"' in message["text"]:
            raise OSError("the peer went away")  # what a server raises for a socket closed under it

    consumer = served_by(task_id, send)
    await asyncio.sleep(0.2)
    await areport_progress(task_id, "transcribing", 5)
    await asyncio.wait_for(consumer, 10)  # ends by itself, without raising
    assert "went away while the server sent" in caplog.text
    assert "a consumer failed" not in caplog.text
    assert open_sockets.counts == {}


class SlowToStopLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """A layer whose receive takes a while to give up when cancelled, as a blocking Redis read can."""

    async def receive(self, channel: str) -> dict[str, Any]:
        try:
            return await super().receive(channel)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(2))
            raise


async def test_hostile_server_cancelling_a_closing_consumer_still_frees_its_slot_and_group(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.system.test_consumers_hostile.SlowToStopLayer"}}
    channel_layers.backends = {}
    await areport_progress("job1", "queued", 0)
    communicator = WebsocketCommunicator(application(), with_token("/ws/tasks/job1/"), headers=[ORIGIN])
    assert (await communicator.connect())[0]
    assert isinstance(await receive(communicator), SnapshotMessage)
    assert open_sockets.counts == {"unknown": 1}
    # The communicator cancels the application after its timeout, as daphne does after its own.
    await communicator.disconnect(timeout=0.2)
    assert open_sockets.counts == {}
    layer: Any = get_channel_layer()
    assert not layer.groups.get("task.job1")
