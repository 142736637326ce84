"""The repository's nginx site (deploy/nginx), run by Debian's nginx on loopback in front of two server
processes: idle sockets outlive nginx's read timeout thanks to heartbeats, and a backend's restart
costs a watcher a reconnect and nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from progress import watch_token
from progress.schemas import HeartbeatMessage, ProgressMessage, SnapshotMessage, parse_server_message
from tests.browser import Publisher
from tests.conftest import RedisServer
from tests.processes import ROOT, Server, free_port, migrate, project_env, serving, spawn, stop, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

READ_TIMEOUT = 3


@pytest.fixture
def proxied(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[int, list[Server], Publisher]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.fail("nginx is not installed: run scripts/setup.sh")
    env = project_env(
        tmp_path,
        REDIS_URL=redis_server.url,
        PROGRESS_HEARTBEAT_INTERVAL="1",
        PROGRESS_MAX_UPDATES_PER_SECOND="0",
        PROGRESS_TRUSTED_PROXIES="127.0.0.1",
    )
    migrate(env)
    ports = [free_port(), free_port()]
    listen = free_port()
    site = subprocess.run(
        ["bash", str(ROOT / "deploy" / "render.sh")],
        env={
            **os.environ,
            "LISTEN": f"127.0.0.1:{listen}",
            "SERVERS": " ".join(f"127.0.0.1:{p}" for p in ports),
            "READ_TIMEOUT": f"{READ_TIMEOUT}s",
            "ACCESS_LOG": str(tmp_path / "access.log"),
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nuser root;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    with ExitStack() as stack:
        servers = [stack.enter_context(serving("uvicorn", env, tmp_path / f"{p}.log", port=p)) for p in ports]
        proxy = spawn(
            [nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)], env, tmp_path / "nginx.out"
        )
        stack.callback(stop, proxy)
        wait_for_port(listen, proxy)
        publisher = Publisher(env, tmp_path / "publisher.log")
        stack.callback(publisher.close)
        yield listen, servers, publisher


async def read_until_closed(ws: Any) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 10)


async def test_nginx_idle_socket_outlives_the_read_timeout_and_a_backend_restart(proxied):
    listen, servers, publisher = proxied
    task_id = f"nginx-{time.monotonic_ns()}"
    publisher.progress(task_id, "queued", 0)
    url = f"ws://127.0.0.1:{listen}/ws/tasks/{task_id}/?token={watch_token(task_id)}"
    async with connect(url, origin=Origin("http://127.0.0.1"), proxy=None) as ws:
        snapshot = parse_server_message(await ws.recv())
        assert isinstance(snapshot, SnapshotMessage)
        started, beats = time.monotonic(), 0
        while time.monotonic() - started < READ_TIMEOUT * 2.5:  # idle: only heartbeats arrive
            assert isinstance(parse_server_message(await asyncio.wait_for(ws.recv(), 10)), HeartbeatMessage)
            beats += 1
        assert beats >= READ_TIMEOUT * 2
        # Restart the backend that holds this socket: it says 1012, and the client comes back through nginx.
        holder = next(s for s in servers if f"watcher of {task_id} connected" in s.log())
        holder.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            await read_until_closed(ws)
        assert ws.close_code == 1012
    await asyncio.to_thread(holder.process.wait, 30)
    await asyncio.to_thread(publisher.progress, task_id, "transcribing", 40)
    resume = (
        f"ws://127.0.0.1:{listen}/ws/tasks/{task_id}/?last_seq={snapshot.seq}&token={watch_token(task_id)}"
    )
    async with connect(resume, origin=Origin("http://127.0.0.1"), proxy=None) as ws:
        frame = parse_server_message(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(frame, ProgressMessage)
        assert (frame.stage, frame.percentage) == ("transcribing", 40)
    other = next(s for s in servers if s is not holder)
    assert f"watcher of {task_id} connected from 127.0.0.1" in other.log()  # the client's address, via XFF


async def test_nginx_routes_a_tasks_watchers_to_one_process(proxied):
    listen, servers, publisher = proxied
    tasks = [f"routed-{n}-{time.monotonic_ns()}" for n in range(16)]
    for task_id in tasks:
        publisher.progress(task_id, "queued", 0)
    sockets = []
    for task_id in tasks:
        url = f"ws://127.0.0.1:{listen}/ws/tasks/{task_id}/?token={watch_token(task_id)}"
        for _ in range(2):
            ws = await connect(url, origin=Origin("http://127.0.0.1"), proxy=None)
            assert isinstance(parse_server_message(await ws.recv()), SnapshotMessage)
            sockets.append(ws)
    try:
        holders = {}
        for task_id in tasks:
            counts = [s.log().count(f"watcher of {task_id} connected") for s in servers]
            assert sorted(counts) == [0, 2], (task_id, counts)  # both on one process
            holders[task_id] = counts.index(2)
        assert set(holders.values()) == {0, 1}  # and the tasks spread over both (all 16 on one: ~1e-4)
    finally:
        for ws in sockets:
            await ws.close()
