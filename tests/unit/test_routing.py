"""The WebSocket entry: Origin checks and routes as Channels' validator and router make them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from progress.routing import websocket_application
from progress.schemas import SnapshotMessage, parse_server_message
from progress.store import record_progress
from tests.conftest import with_token

pytestmark = pytest.mark.django_db(transaction=True)


async def _connects(path: str, headers: list[tuple[bytes, bytes]]) -> bool:
    communicator = WebsocketCommunicator(websocket_application(), path, headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return bool(connected)


@pytest.mark.parametrize(
    "origin",
    [b"http://127.0.0.1", b"http://127.0.0.1:8000", b"https://localhost", b"http://LOCALHOST:3000"],
)
async def test_routing_allowed_origin_connects(origin):
    assert await _connects("/ws/tasks/job1/", [(b"origin", origin)])


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"http://127.0.0.1.evil.example", b"null", b"\xff"]
)
async def test_routing_foreign_origin_refused(origin):
    assert not await _connects("/ws/tasks/job1/", [(b"origin", origin)])


async def test_routing_missing_origin_refused():
    assert not await _connects("/ws/tasks/job1/", [])


@pytest.mark.parametrize("path", ["/ws/tasks/bad%20id/", "/ws/tasks/x/y/", "/ws/", "/"])
async def test_routing_unknown_path_refused(path):
    assert not await _connects(path, [(b"origin", b"http://127.0.0.1")])


async def test_routing_task_route_gets_its_task_id():
    await sync_to_async(record_progress)("job-1_A", "queued", 0, None, attempt=None, min_interval=0)
    communicator = WebsocketCommunicator(
        websocket_application(), with_token("/ws/tasks/job-1_A"), headers=[(b"origin", b"http://127.0.0.1")]
    )
    connected, _ = await communicator.connect()
    assert connected
    snapshot = parse_server_message(await communicator.receive_from(3))
    await communicator.disconnect()
    assert isinstance(snapshot, SnapshotMessage)
    assert snapshot.task_id == "job-1_A"


def _under_root(app: Any, root_path: str) -> Any:
    """``app`` behind a proxy that mounts the project at ``root_path`` (the ASGI path keeps it)."""

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app(dict(scope, root_path=root_path), receive, send)

    return mounted


async def test_routing_root_path_routes_the_task():
    await sync_to_async(record_progress)("job1", "queued", 0, None, attempt=None, min_interval=0)
    app = _under_root(websocket_application(), "/transcribe")
    path = "/transcribe" + with_token("/ws/tasks/job1/")
    communicator = WebsocketCommunicator(app, path, headers=[(b"origin", b"http://127.0.0.1")])
    connected, _ = await communicator.connect()
    assert connected
    snapshot = parse_server_message(await communicator.receive_from(3))
    await communicator.disconnect()
    assert isinstance(snapshot, SnapshotMessage)
    assert snapshot.task_id == "job1"


@pytest.mark.parametrize("path", ["/transcribe/ws/tasks/bad%20id/", "/transcribe/"])
async def test_routing_root_path_unknown_path_refused(path):
    app = _under_root(websocket_application(), "/transcribe")
    communicator = WebsocketCommunicator(app, path, headers=[(b"origin", b"http://127.0.0.1")])
    connected, _ = await communicator.connect()
    assert not connected


async def test_routing_project_asgi_uses_the_same_stack():
    from transcribe_project import asgi

    assert await _connects_to(asgi.application, "/ws/tasks/job1/", b"http://127.0.0.1")
    assert not await _connects_to(asgi.application, "/ws/tasks/job1/", b"http://evil.example")
    assert not await _connects_to(asgi.application, "/ws/tasks/bad%20id/", b"http://127.0.0.1")


async def _connects_to(app: Any, path: str, origin: bytes) -> bool:
    communicator = WebsocketCommunicator(app, with_token(path), headers=[(b"origin", origin)])
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return bool(connected)
