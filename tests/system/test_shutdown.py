"""Graceful restarts on real servers: SIGTERM closes every socket with the restart code (1012, or 4012
under daphne) within the bound, and the watchers resume on another server process missing nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from progress.schemas import ProgressMessage, SnapshotMessage, parse_server_message
from tests.browser import Publisher
from tests.conftest import ALL_STAGES, RedisServer
from tests.processes import Server, migrate, project_env, serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

WATCHERS = 50
BOUND = 5.0
STAGES = list(ALL_STAGES.names)


@pytest.fixture(params=["daphne", "uvicorn"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Server, Server, Publisher]]:
    """Two server processes of one kind on one Redis and database, and a job process."""
    kind: str = request.param
    redis = RedisServer(tmp_path)
    redis.start()
    env = project_env(
        tmp_path,
        REDIS_URL=redis.url,
        PROGRESS_MAX_UPDATES_PER_SECOND="0",
        PROGRESS_HEARTBEAT_INTERVAL="2",
        PROGRESS_SHUTDOWN_TIMEOUT=str(BOUND),
    )
    try:
        migrate(env)
        with ExitStack() as stack:
            servers = [stack.enter_context(serving(kind, env, tmp_path / name)) for name in ("a", "b")]
            publisher = Publisher(env, tmp_path / "publisher.log")
            stack.callback(publisher.close)
            yield kind, servers[0], servers[1], publisher
    finally:
        redis.stop()


class Watcher:
    """A browser's client: on a restart close it goes to the other server, resuming by seq."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.frames: list[Any] = []
        self.last_seq = 0
        self.codes: list[int | None] = []
        self.ready = asyncio.Event()

    async def run(self, first: Server, second: Server) -> None:
        for server in (first, second):
            query = f"?last_seq={self.last_seq}" if self.last_seq else ""
            async with server.connect(f"/ws/tasks/{self.task_id}/{query}", ping_interval=None) as ws:
                try:
                    async for raw in ws:
                        frame = parse_server_message(raw)
                        self.frames.append(frame)
                        self.last_seq = max(self.last_seq, getattr(frame, "seq", 0))
                        self.ready.set()
                        if isinstance(frame, ProgressMessage) and frame.stage == "complete":
                            return
                except ConnectionClosed:
                    pass
                self.codes.append(ws.close_code)
                if self.codes[-1] == 1000:
                    return

    def stages(self) -> list[str]:
        seen: list[str] = []
        for frame in self.frames:
            names = [h.stage for h in frame.history] if isinstance(frame, SnapshotMessage) else []
            if isinstance(frame, ProgressMessage | SnapshotMessage):
                names.append(frame.stage)
            seen.extend(n for n in names if not seen or seen[-1] != n)
        return seen


async def test_shutdown_sigterm_closes_with_the_restart_code_and_watchers_resume_elsewhere(pair):
    kind, first, second, publisher = pair
    task_id = f"restart-{kind}-{time.monotonic_ns()}"
    publisher.progress(task_id, "queued", 0)
    watchers = [Watcher(task_id) for _ in range(WATCHERS)]
    runs = [asyncio.create_task(w.run(first, second)) for w in watchers]
    await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)

    async def job() -> None:  # a running job: it keeps reporting while the server restarts
        for stage in STAGES[2:-1]:
            for pct in range(0, 100, 10):
                await asyncio.to_thread(publisher.progress, task_id, stage, pct)
                await asyncio.sleep(0.03)
        await asyncio.to_thread(publisher.progress, task_id, "complete", 100)

    running_job = asyncio.create_task(job())
    await asyncio.sleep(0.3)
    stopped_at = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(first.process.wait, 30)
    exited_after = time.monotonic() - stopped_at
    await running_job
    await asyncio.wait_for(asyncio.gather(*runs), 60)

    restart = 4012 if kind == "daphne" else 1012
    codes = {w.codes[0] for w in watchers}
    print(f"{kind}: exited {exited_after:.2f} s after SIGTERM; first close codes {codes}")
    assert [w.codes[:1] for w in watchers] == [[restart]] * WATCHERS
    assert exited_after < BOUND + 5
    for watcher in watchers:
        assert watcher.stages() == STAGES[1:]  # queued onwards, every stage, none missed
        final = watcher.frames[-1]
        assert isinstance(final, ProgressMessage)
        assert final.stage == "complete"
    assert "closing 50 sockets" in first.log()
