"""Shared fixtures: a fresh channel layer per test, communicators, and a real redis-server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from progress import loops
from progress.limits import open_sockets
from progress.schemas import ServerMessage, parse_server_message
from progress.stages import Stages
from tests.postgres import PostgresServer
from transcription.stages import STAGES as DECLARED_STAGES

ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture(autouse=True)
def _fresh_layer() -> Iterator[None]:
    """Every test gets new channel layers and a publisher with no remembered loop."""
    channel_layers.backends = {}
    loops.unbind_server_loop()
    open_sockets.counts = {}  # sockets a previous test left open do not count against this one
    yield
    channel_layers.backends = {}
    loops.unbind_server_loop()


@pytest.fixture
def fast_progress(settings: Any) -> dict[str, Any]:
    """PROGRESS settings for tests: no coalescing, a long heartbeat (tests that want one set it)."""
    progress: dict[str, Any] = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": 0, "HEARTBEAT_INTERVAL": 3600}
    settings.PROGRESS = progress
    return progress


@pytest.fixture(autouse=True)
def _no_trailing_announcement() -> Iterator[None]:
    """A test's last change of the line may leave an announcement pending in a timer thread, which
    would reach the database after the test: it goes with the test."""
    yield
    from progress import places

    with places._line.lock:
        pending, places._line.trailing = places._line.trailing, None
        places._line.read = None
        places._line.announced_at = float("-inf")
    if pending is not None:
        pending.cancel()


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """Uploads land in this test's own MEDIA_ROOT, and jobs run in the in-process pool."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = settings.MEDIA_ROOT / "tmp"
    settings.FILE_UPLOAD_TEMP_DIR.mkdir(parents=True)
    settings.REDIS_URL = ""
    return Path(settings.MEDIA_ROOT)


def application() -> Any:
    from transcribe_project.asgi import application

    return application


_TASK_PATH = re.compile(r"^/ws/tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/?(?:\?|$)")


def csrf_client() -> Client:
    """A Django test client with a new session that does the CSRF dance, as a script would."""
    client = Client(enforce_csrf_checks=True)
    token = client.get("/api/csrf/").json()["csrf_token"]
    client.defaults["HTTP_X_CSRFTOKEN"] = token
    return client


def session_owner(client: Any) -> str:
    """The owner key of a Django test client's session, giving the session one (as a first upload
    does) if it has none yet."""
    from progress.access import SESSION_OWNER_KEY

    session = client.session  # the test client makes a session, and its cookie, if there is none
    session.setdefault(SESSION_OWNER_KEY, "owner-of-" + session.session_key)
    session.save()
    return f"session:{session[SESSION_OWNER_KEY]}"


def with_token(path: str) -> str:
    """``path`` with a watch token for its task added, unless it names one already (or no task)."""
    match = _TASK_PATH.match(path)
    if match is None or "token=" in path:
        return path
    from progress import watch_token

    return f"{path}{'&' if '?' in path else '?'}token={watch_token(match['task_id'])}"


@asynccontextmanager
async def watching(
    path: str, *, origin: bool = True, token: bool = True
) -> AsyncIterator[WebsocketCommunicator]:
    """A connected WebSocket communicator on ``path`` (with a watch token), disconnected afterwards."""
    path = with_token(path) if token else path
    communicator = WebsocketCommunicator(application(), path, headers=[ORIGIN] if origin else [])
    connected, _ = await communicator.connect()
    assert connected
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def receive(
    communicator: WebsocketCommunicator, timeout: float = 3, *, places: bool = False
) -> ServerMessage:
    """The next frame, validated against the protocol's models. A waiting task's place in line may be
    told at any moment: ``queue`` frames are passed over unless ``places``."""
    while True:
        message = parse_server_message(await communicator.receive_from(timeout))
        if places or message.type != "queue":
            return message


async def output(communicator: WebsocketCommunicator, timeout: float = 3) -> dict[str, Any]:
    """The next thing the consumer sends (a frame or the close), passing over ``queue`` frames."""
    while True:
        sent: dict[str, Any] = await communicator.receive_output(timeout)
        if not (sent["type"] == "websocket.send" and '"type":"queue"' in (sent.get("text") or "")):
            return sent


async def quiet(communicator: WebsocketCommunicator, timeout: float = 0.2) -> bool:
    """Whether nothing but ``queue`` frames (a waiting task's place) arrives within ``timeout``.

    Built on ``receive_nothing``: a timed-out ``receive_output`` would cancel the application."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if await communicator.receive_nothing(left):
            return True
        sent = await communicator.receive_output(1)
        if not (sent["type"] == "websocket.send" and '"type":"queue"' in (sent.get("text") or "")):
            return False
    return True


ALL_STAGES = Stages.declared(DECLARED_STAGES)
"""This project's stages, ``complete`` last."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """A server could not listen on the port it was given."""


class RedisServer:
    """A real redis-server on a free loopback port, started and stopped by the test run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    answered = s.recv(16).startswith(b"+PONG")
            except OSError:
                answered = False
            # A server that failed to bind exits at once; the PONG may have come from another
            # run's redis-server on the same port, so it only counts while ours still runs.
            time.sleep(0.05)
            if self.process.poll() is not None:
                raise PortTaken(
                    f"redis-server exited with {self.process.returncode} (port {self.port} taken?)"
                )
            if answered:
                return
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def started_redis(directory: Path) -> RedisServer:
    """A redis-server started on a free port (fails the test where redis-server is not installed)."""
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        pytest.fail("redis-server is not installed: run scripts/setup.sh")
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory)
    for _ in range(4):  # the free port may be taken by another run before redis binds it
        try:
            server.start()
            return server
        except PortTaken:
            server.port = free_port()
    pytest.fail("redis-server found no free port")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server for one test."""
    server = started_redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def second_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Another redis-server, for layers that shard over several hosts."""
    server = started_redis(tmp_path / "second")
    yield server
    server.stop()


LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "progress.layers.PubSubChannelLayer",  # what REDIS_URL selects by default
}


def use_redis_layer(settings: Any, redis_server: RedisServer, kind: str) -> None:
    """Point the default channel layer at the real redis-server, as REDIS_URL and REDIS_LAYER would."""
    config: dict[str, Any] = {
        "hosts": [{"address": redis_server.url, "max_connections": 4096, "socket_timeout": 30}]
    }
    if kind == "core":
        config["capacity"] = 1000
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": LAYERS[kind], "CONFIG": config}}
    channel_layers.backends = {}


@pytest.fixture
def redis_layer(redis_server: RedisServer, settings: Any) -> RedisServer:
    """The core Redis layer (RedisChannelLayer) on a real redis-server."""
    use_redis_layer(settings, redis_server, "core")
    return redis_server


@pytest.fixture
def pubsub_layer(redis_server: RedisServer, settings: Any) -> RedisServer:
    """The production pub/sub layer (progress.layers) on a real redis-server."""
    use_redis_layer(settings, redis_server, "pubsub")
    return redis_server


@pytest.fixture(params=sorted(LAYERS))
def any_redis_layer(request: pytest.FixtureRequest, redis_server: RedisServer, settings: Any) -> RedisServer:
    """Each Redis layer in turn, on a real redis-server."""
    use_redis_layer(settings, redis_server, request.param)
    return redis_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole run (fails when not installed)."""
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.stop()
