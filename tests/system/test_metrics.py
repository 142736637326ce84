"""Prometheus metrics: a scripted session against real processes (a server and a separate job process
sharing PROMETHEUS_MULTIPROC_DIR) shows its connect, frames, report outcomes and close code."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from progress import metrics
from tests.browser import Publisher
from tests.conftest import RedisServer
from tests.processes import migrate, project_env, serving


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def test_metrics_frames_are_counted_without_a_write_per_frame(monkeypatch):
    metrics.flush_frames()  # what other tests' sockets counted
    flushed: list[float] = []
    monkeypatch.setattr(metrics.FRAMES, "inc", lambda n=1: flushed.append(n))
    for _ in range(100):
        metrics.frame_sent({"type": "task.event"})
    assert sum(flushed) <= 1  # still held in this process: at most the flush when a second had passed
    metrics.flush_frames()
    assert sum(flushed) == 100


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.redis
async def test_metrics_after_a_scripted_session(tmp_path: Path, redis_server: RedisServer):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = project_env(tmp_path, REDIS_URL=redis_server.url, PROMETHEUS_MULTIPROC_DIR=str(shared))
    migrate(env)
    publisher = Publisher(env, tmp_path / "publisher.log")
    try:
        with serving("uvicorn", env, tmp_path / "uvicorn.log") as server:
            publisher.progress("m1", "queued", 0)
            async with server.connect("/ws/tasks/m1/") as ws:
                await asyncio.wait_for(ws.recv(), 30)  # the snapshot
                await asyncio.to_thread(publisher.progress, "m1", "transcribing", 10)
                await asyncio.wait_for(ws.recv(), 30)  # a delivered frame
            stale = ("m1", "queued", 0)  # a lower stage: ignored
            await asyncio.to_thread(publisher.progress, *stale, changed=False)
            # The server counts the close once its cleanup has run: poll for it, with a bound.
            closed = ("progress_websocket_closes_total", (("code", "1000"),))
            for _ in range(300):
                text = await asyncio.to_thread(scrape, server.url("/metrics"))
                if samples(text).get(closed):
                    break
                await asyncio.sleep(0.1)
    finally:
        publisher.close()
    found = samples(text)
    assert found[("progress_frames_sent_total", ())] >= 1
    assert found[("progress_websocket_closes_total", (("code", "1000"),))] == 1
    assert found[("progress_websocket_connections", ())] == 0  # connected, then closed
    assert found[("progress_reports_total", (("outcome", "accepted"),))] >= 2  # from the job process
    assert found[("progress_reports_total", (("outcome", "stale"),))] == 1
    assert found[("progress_report_seconds_count", ())] >= 3
    assert found[("progress_fanout_lag_seconds_count", ())] >= 1
    assert found[("progress_tasks", (("status", "running"),))] == 1
