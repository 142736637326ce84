"""``manage.py runserver`` on the embedded defaults (SQLite, in-memory layer) serves the protocol."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from progress.schemas import (
    HeartbeatMessage,
    SnapshotMessage,
    parse_server_message,
)
from tests import processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.Server]:
    """runserver with a fresh DATA_DIR (migrated) holding one task, ``demo``, reported from a shell."""
    data_dir = tmp_path_factory.mktemp("embedded")
    env = processes.project_env(data_dir, PROGRESS_HEARTBEAT_INTERVAL="0.5")
    processes.migrate(env)
    out = processes.manage(
        ["report_progress", "demo", "transcribing", "25", "--message", "chunk 1", "--token"], env
    )
    token = out.split("watch token: ")[1].strip()
    with processes.runserver(env, data_dir / "runserver.log") as server:
        server.tokens["demo"] = token
        yield server


async def test_runserver_snapshot_then_heartbeat(embedded_server: processes.Server):
    async with embedded_server.connect(
        f"/ws/tasks/demo/?token={embedded_server.tokens['demo']}", ping_interval=None
    ) as ws:
        snapshot = parse_server_message(await asyncio.wait_for(ws.recv(), 30))
        assert isinstance(snapshot, SnapshotMessage)
        assert (snapshot.seq, snapshot.stage, snapshot.percentage, snapshot.message) == (
            1,
            "transcribing",
            25,
            "chunk 1",
        )
        assert isinstance(parse_server_message(await asyncio.wait_for(ws.recv(), 30)), HeartbeatMessage)


@pytest.mark.parametrize("path", ["/ws/tasks/nobody/", "/ws/tasks/demo/?token=forged"])
async def test_runserver_refused_watch_closes_4404(embedded_server: processes.Server, path: str):
    async with embedded_server.connect(path, ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 4404


@pytest.mark.parametrize("path", ["/ws/tasks/bad%20id/", "/ws/elsewhere/"])
async def test_runserver_bad_path_refused_at_handshake(embedded_server: processes.Server, path: str):
    with pytest.raises(InvalidStatus) as refused:
        async with embedded_server.connect(path):
            pass
    assert refused.value.response.status_code == 403
    assert "Traceback" not in embedded_server.log()


async def test_runserver_http_snapshot(embedded_server: processes.Server):
    def fetch() -> dict[str, object]:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        with direct.open(
            embedded_server.url(f"/api/tasks/demo/?token={embedded_server.tokens['demo']}"), timeout=30
        ) as response:
            result: dict[str, object] = json.load(response)
            return result

    body = await asyncio.to_thread(fetch)
    assert SnapshotMessage.model_validate(body).percentage == 25


def test_runserver_uses_the_embedded_database(embedded_server: processes.Server):
    assert Path(embedded_server.env["DATA_DIR"], "db.sqlite3").is_file()
    assert "REDIS_URL" not in embedded_server.env


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8000", "http://localhost"])
async def test_runserver_readme_origins_accepted(embedded_server: processes.Server, origin: str):
    async with embedded_server.connect(
        f"/ws/tasks/demo/?token={embedded_server.tokens['demo']}", origin=origin
    ) as ws:
        assert isinstance(parse_server_message(await asyncio.wait_for(ws.recv(), 30)), SnapshotMessage)


async def test_runserver_foreign_origin_refused(embedded_server: processes.Server):
    with pytest.raises(InvalidStatus) as refused:
        async with embedded_server.connect(
            f"/ws/tasks/demo/?token={embedded_server.tokens['demo']}", origin="http://evil.example"
        ):
            pass
    assert refused.value.response.status_code == 403


def test_runserver_drops_a_client_that_answers_no_ping(embedded_server: processes.Server):
    from tests.system.test_hostile_servers import drain_until_closed, stuck_client

    # runserver is daphne with prompt pings (every 5 s, 10 s to answer): daphne gives the application
    # no backpressure, so its ping is what ends a client that stopped reading, which answers none.
    stuck = stuck_client(embedded_server, "demo")
    try:
        _, took = drain_until_closed(stuck, 40)
    finally:
        stuck.close()
    print(f"runserver dropped a client that answers no ping after {took:.1f} s")
    assert took < 30
