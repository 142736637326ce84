"""Hostile clients against real servers (daphne and uvicorn, Redis pub/sub layer), over real HTTP and
sockets: refusals that reveal nothing, a frame flood, too many sockets from one address, and a client
that stops reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from progress import watch_token
from progress.schemas import ProgressMessage, SnapshotMessage, parse_server_message
from progress.views import NOT_FOUND_BODY
from tests.browser import Publisher
from tests.conftest import RedisServer
from tests.processes import Server, migrate, project_env, serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

# daphne gives an application no backpressure: a stuck socket is dropped by its ping timeout.
DAPHNE_PINGS = ("--ping-interval", "1", "--ping-timeout", "5")


@dataclass
class Served:
    kind: str
    server: Server
    publisher: Publisher
    redis_url: str


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    kind: str = request.param
    data_dir = tmp_path_factory.mktemp(kind)
    redis = RedisServer(data_dir)
    redis.start()
    env = project_env(
        data_dir,
        REDIS_URL=redis.url,
        PROGRESS_MAX_UPDATES_PER_SECOND="0",
        PROGRESS_HEARTBEAT_INTERVAL="5",
        PROGRESS_MAX_CONNECTIONS_PER_CLIENT="5",
        PROGRESS_CLIENT_FRAME_BURST="20",
        PROGRESS_CLIENT_FRAMES_PER_SECOND="5",
        PROGRESS_TRUSTED_PROXIES="127.0.0.1",  # the tests play the proxy: X-Forwarded-For names the client
    )
    try:
        migrate(env)
        options = DAPHNE_PINGS if kind == "daphne" else ()
        with ExitStack() as stack:
            server = stack.enter_context(serving(kind, env, data_dir / f"{kind}.log", *options))
            publisher = Publisher(env, data_dir / "publisher.log")
            stack.callback(publisher.close)
            yield Served(kind, server, publisher, redis.url)
    finally:
        redis.stop()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def good_watcher(
    served: Served, task_id: str, count: int, sent_at: dict[int, float], ready: asyncio.Event
) -> list[float]:
    """A watcher that reads until update ``count``: the latency of each update it got."""
    latencies: dict[int, float] = {}
    async with served.server.connect(f"/ws/tasks/{task_id}/", ping_interval=None) as ws:
        assert isinstance(parse_server_message(await ws.recv()), SnapshotMessage)
        ready.set()
        while count not in latencies:
            try:
                frame = parse_server_message(await asyncio.wait_for(ws.recv(), 60))
            except ConnectionClosed as exc:
                raise AssertionError(f"{exc} after {sorted(latencies)}\n{served.server.log()}") from exc
            if isinstance(frame, ProgressMessage) and frame.message:
                latencies[int(frame.message[:6])] = time.monotonic() - sent_at[int(frame.message[:6])]
    missed = sorted(set(range(1, count + 1)) - set(latencies))
    assert missed == [], f"missed updates {missed}"
    return list(latencies.values())


async def report(served: Served, task_id: str, count: int, sent_at: dict[int, float], pause: float) -> None:
    for i in range(1, count + 1):
        sent_at[i] = time.monotonic()
        message = f"{i:06d}" + "m" * 400  # frames of ~600 bytes
        await asyncio.to_thread(served.publisher.progress, task_id, "transcribing", i * 99 // count, message)
        await asyncio.sleep(pause)


def new_task(served: Served, name: str) -> str:
    task_id = f"{served.kind}-{name}-{time.monotonic_ns()}"
    served.publisher.progress(task_id, "transcribing", 0)
    return task_id


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return f"p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


async def flood(ws: Any) -> None:
    """Send pings as fast as the socket takes them, never reading, until the server closes it."""
    for n in range(200_000):
        await ws.send('{"type": "ping"}')
        if n % 50 == 0:
            await asyncio.sleep(0)  # let the client's reader run
    while True:
        await asyncio.wait_for(ws.recv(), 10)


async def test_limits_flood_is_closed_4008_and_others_get_everything(served: Served):
    task_id = new_task(served, "flood")
    sent_at: dict[int, float] = {}
    before = rss_kb(served.server.process.pid)
    ready = asyncio.Event()
    watching = asyncio.create_task(good_watcher(served, task_id, 30, sent_at, ready))
    await asyncio.wait_for(ready.wait(), 30)
    started = time.monotonic()
    # max_queue=None: the client keeps reading what arrives, so it sees the server's close at once.
    async with served.server.connect(f"/ws/tasks/{task_id}/", ping_interval=None, max_queue=None) as flooder:
        reporting = asyncio.create_task(report(served, task_id, 30, sent_at, 0.02))
        with pytest.raises(ConnectionClosed):
            await flood(flooder)
        closed_after = time.monotonic() - started
        assert flooder.close_code == 4008
    await reporting
    latencies = await asyncio.wait_for(watching, 60)
    after = rss_kb(served.server.process.pid)
    print(
        f"{served.kind}: flooder closed 4008 after {closed_after:.2f} s; RSS {before} -> {after} KB; "
        f"the other watcher got 30/30 updates, {summary(latencies)}"
    )
    # daphne parses what a flooder sends until the client ends the closing handshake (docs/security.md).
    assert closed_after < (5 if served.kind == "uvicorn" else 30)
    assert "sent frames too fast" in served.server.log()


async def test_limits_sockets_beyond_the_per_address_limit_are_refused_4029(served: Served):
    task_id = new_task(served, "many")
    path = f"/ws/tasks/{task_id}/"
    client: dict[str, Any] = {"additional_headers": {"X-Forwarded-For": "203.0.113.7"}}  # via the proxy
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(served.server.connect(path, **client)) for _ in range(5)]
        for ws in held:
            assert isinstance(parse_server_message(await ws.recv()), SnapshotMessage)
        async with served.server.connect(path, **client) as extra:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(extra.recv(), 10)
            assert extra.close_code == 4029
        other: dict[str, Any] = {"additional_headers": {"X-Forwarded-For": "203.0.113.8"}}
        async with served.server.connect(path, **other) as elsewhere:  # another client is not held up
            assert isinstance(parse_server_message(await elsewhere.recv()), SnapshotMessage)
    await asyncio.sleep(0.5)
    async with served.server.connect(path, **client) as again:  # the slots came back
        assert isinstance(parse_server_message(await again.recv()), SnapshotMessage)
    assert "client 203.0.113.7 holds too many sockets" in served.server.log()


def stuck_client(server: Server, task_id: str) -> socket.socket:
    """A raw WebSocket client that completes the handshake, then never reads (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/tasks/{task_id}/?token={watch_token(task_id)} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def drain_until_closed(sock: socket.socket, limit: float) -> tuple[int, float]:
    """Read everything until the server closes; the bytes read and the seconds it took."""
    sock.settimeout(limit)
    started, total = time.monotonic(), 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return total, time.monotonic() - started


async def reading_watcher(served: Served, task_id: str, last: int, ready: asyncio.Event) -> int:
    """A watcher that reads every frame until seq ``last``: how many frames it got."""
    got = 0
    async with served.server.connect(f"/ws/tasks/{task_id}/", ping_interval=None, max_size=None) as ws:
        seq = json.loads(await ws.recv())["seq"]
        ready.set()
        while seq < last:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if frame["type"] == "progress":
                assert frame["seq"] == seq + 1, "a frame was lost"
                seq, got = frame["seq"], got + 1
    return got


async def inject(served: Served, task_id: str, first: int, count: int, size: int) -> None:
    """Group messages with big frames, sent as another process's producer would (a stock layer)."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=[served.redis_url])
    pad = "x" * size
    try:
        for seq in range(first, first + count):
            frame = {"type": "progress", "task_id": task_id, "seq": seq, "stage": "transcribing", "pad": pad}
            message = {"type": "task.event", "task_id": task_id, "seq": seq, "prev_seq": seq - 1}
            await layer.group_send(f"task.{task_id}", {**message, "final": False, "text": json.dumps(frame)})
            if seq % 20 == 0:
                await asyncio.sleep(0.005)  # about 4,000 frames a second
    finally:
        await layer.flush()


async def test_limits_client_that_stops_reading_is_dropped(served: Served):
    task_id = new_task(served, "stuck")  # seq 1
    pid = served.server.process.pid
    before = rss_kb(pid)
    count, size = 3000, 4000  # 12 MB for each watcher: more than the kernel and the server may buffer
    ready = asyncio.Event()
    reading = asyncio.create_task(reading_watcher(served, task_id, 1 + count, ready))
    await asyncio.wait_for(ready.wait(), 30)
    stuck = await asyncio.to_thread(stuck_client, served.server, task_id)
    try:
        started = time.monotonic()
        await asyncio.to_thread(asyncio.run, inject(served, task_id, 2, count, size))  # its own loop
        got = await asyncio.wait_for(reading, 120)
        peak = rss_kb(pid)
        if served.kind == "uvicorn":
            # Its sends wait on the socket and its backlog passes MAX_QUEUED_BYTES: it is dropped.
            while "did not take its frames" not in served.server.log():
                assert time.monotonic() - started < 30, served.server.log()[-3000:]
                await asyncio.sleep(0.1)
        dropped_after = time.monotonic() - started
        await asyncio.sleep(6)  # daphne: its ping interval and timeout
        read, took = await asyncio.to_thread(drain_until_closed, stuck, 30)
    finally:
        stuck.close()
    print(
        f"{served.kind}: stuck socket dropped {dropped_after:.1f} s after {count * size // 1_000_000} MB "
        f"began; the client read {read} bytes left in buffers, then the end ({took:.1f} s); RSS {before} -> "
        f"{peak} KB at the peak; the reading watcher got {got}/{count} frames"
    )
    assert got == count
    assert took < 30  # the server closed it: reading reached the end


def http(served: Served, method: str, path: str, cookies: str = "") -> tuple[int, bytes]:
    """Status and body of one request, with a CSRF secret of our own (cookie and header) for POSTs."""
    secret = "c3" * 16
    headers = {"Cookie": f"csrftoken={secret}; {cookies}", "X-CSRFToken": secret}
    request = urllib.request.Request(served.server.url(path), method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_hostile_refusals_over_http_and_sockets_reveal_nothing(served: Served):
    task_id = new_task(served, "private")
    detail = (
        'Traceback (most recent call last):\n  File "/srv/app/jobs.py", line 3\nOSError: /srv/media/a.wav'
    )
    served.publisher.error(task_id, "boom", "It broke.", detail)
    other = new_task(served, "other")
    missing = "x" * 32
    for suffix in ["/", "/result", "/retry"]:
        method = "POST" if suffix == "/retry" else "GET"
        answers = {
            http(served, method, f"/api/tasks/{tid}{suffix}{query}")
            for tid, query in [
                (task_id, ""),
                (task_id, "?token=forged"),
                (task_id, f"?token={watch_token(other)}"),
                (missing, ""),
                (missing, f"?token={watch_token(missing)}"),
            ]
        }
        assert answers == {(404, NOT_FOUND_BODY)}, suffix
    # A token reads, but cannot retry.
    status, body = http(served, "GET", f"/api/tasks/{task_id}/?token={watch_token(task_id)}")
    assert status == 200
    assert json.loads(body)["error"]["technical_detail"] is None  # a traceback never leaves the server
    assert http(served, "POST", f"/api/tasks/{task_id}/retry?token={watch_token(task_id)}")[0] == 404
    for path in [f"/ws/tasks/{task_id}/", f"/ws/tasks/{task_id}/?token=forged", f"/ws/tasks/{missing}/"]:
        async with served.server.connect(path, token=False) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4404
