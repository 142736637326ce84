"""A Redis Sentinel failover under a running job: three sentinels, a master and a replica, two uvicorn
processes and a Celery worker, all following the sentinels (REDIS_SENTINELS), none given a Redis URL."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from progress.schemas import ProgressMessage
from tests.e2e_client import Http, Watcher, celery_worker
from tests.fixtures_audio import make_speech_wav
from tests.processes import Server, migrate, project_env, serving, stop
from tests.sentinel import SentinelCluster
from tests.system.test_e2e import STAGES, assert_complete_transcript, wait_for_progress

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

WATCHERS = 100


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path / "redis")
    cluster.directory.mkdir()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def servers(cluster: SentinelCluster, tmp_path: Path) -> Iterator[tuple[dict[str, str], list[Server]]]:
    """Two production servers (uvicorn) on one SQLite database, following the sentinels."""
    env = project_env(
        tmp_path,
        PROGRESS_MAX_CONNECTIONS_PER_CLIENT="0",  # a hundred watchers from one loopback address
        **cluster.env(),
    )
    assert "REDIS_URL" not in env
    migrate(env)
    with ExitStack() as stack:
        running = [stack.enter_context(serving("uvicorn", env, tmp_path / f"uvicorn{n}.log")) for n in (1, 2)]
        yield env, running


async def test_sentinel_master_killed_mid_job_loses_no_stage(cluster, servers, tmp_path):
    env, running = servers
    speech = make_speech_wav(tmp_path / "speech", seconds_min=40)
    worker = await asyncio.to_thread(celery_worker, env, tmp_path / "worker.log")
    try:
        client = Http(running[0])
        status, body = await asyncio.to_thread(client.upload, speech.name, speech.read_bytes())
        assert status == 201, body
        task_id = body["task_id"]
        watchers = [Watcher(running[n % 2], task_id) for n in range(WATCHERS)]
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 60)
        await asyncio.to_thread(wait_for_progress, watchers[0], "transcribing", 5)
        old_master = cluster.master_port()
        killed_at, killed_wall = time.monotonic(), time.time()
        await asyncio.to_thread(cluster.kill_master)
        await asyncio.wait_for(asyncio.gather(*tasks), 240)
        assert worker.poll() is None  # the worker rode the failover out
        # The queue follows too: a server enqueues on the new master and the worker takes the job.
        short = make_speech_wav(tmp_path / "short")
        status, body = await asyncio.to_thread(Http(running[1]).upload, short.name, short.read_bytes())
        assert status == 201, body
        later = Watcher(running[1], body["task_id"])
        await asyncio.wait_for(later.run(), 120)
        assert later.stages() == STAGES
    finally:
        stop(worker)
    assert cluster.master_port() == cluster.replica.port != old_master
    after = []
    for watcher in watchers:
        assert watcher.stages() == STAGES, watcher.frames
        assert isinstance(watcher.final, ProgressMessage)
        assert watcher.final.stage == "complete"
        # The first frame made after the kill (one published just before may still be arriving).
        after.append(
            next(
                t - killed_at
                for t, frame in watcher.frames
                if isinstance(frame, ProgressMessage) and frame.timestamp.timestamp() > killed_wall
            )
        )
    reconnects = sum(w.reconnects for w in watchers)
    print(
        f"\nsentinel failover: first frame after the master's SIGKILL in {min(after):.2f} s (fastest), "
        f"{statistics.median(after):.2f} s (median), {max(after):.2f} s (slowest watcher); "
        f"{reconnects} reconnects among {WATCHERS} watchers"
    )
    assert_complete_transcript(client, task_id, speech)
    for server in running:
        assert server.process.poll() is None
        assert "Exception inside application" not in server.log()
