"""/healthz and /readyz: liveness, and readiness naming what is unreachable, with latencies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import HttpCommunicator

from progress import health
from tests.conftest import application

pytestmark = [pytest.mark.django_db(transaction=True)]


async def get(path: str) -> tuple[int, dict[str, Any]]:
    import json

    response = await HttpCommunicator(
        application(), "GET", path, headers=[(b"host", b"127.0.0.1")]
    ).get_response(10)
    return response["status"], json.loads(response["body"])


@pytest.fixture(autouse=True)
def _fresh_results():
    health._results.clear()
    yield
    health._results.clear()


async def test_health_healthz_answers():
    assert await get("/healthz") == (200, {"status": "ok"})


async def test_health_readyz_lists_each_check_with_its_latency():
    status, body = await get("/readyz")
    assert status == 200
    assert body["status"] == "ready"
    assert set(body["checks"]) >= {"database", "channel_layer"}
    assert all(check["ok"] and check["ms"] >= 0 for check in body["checks"].values())


async def test_health_readyz_names_what_failed(monkeypatch, caplog):
    async def down() -> None:
        raise ConnectionError("refused")

    monkeypatch.setitem(health._checks, "channel_layer", down)
    status, body = await get("/readyz")
    assert status == 503
    assert body["failed"] == ["channel_layer"]
    assert body["checks"]["channel_layer"]["ok"] is False
    assert "refused" not in json.dumps(body)  # the error (hosts, addresses) is logged, not shown
    assert "refused" in caplog.text


async def test_health_readyz_caches_each_check_for_a_second(monkeypatch):
    calls = []

    async def counted() -> None:
        calls.append(1)

    monkeypatch.setitem(health._checks, "database", counted)
    for _ in range(5):
        await get("/readyz")
    assert len(calls) == 1
    await asyncio.sleep(health.CACHE_SECONDS + 0.1)
    await get("/readyz")
    assert len(calls) == 2


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.redis
def test_health_readyz_follows_redis_on_a_real_server(tmp_path, redis_server):
    import time
    import urllib.error
    import urllib.request

    from tests.processes import migrate, project_env, serving

    def ready(url: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_for(url: str, status: int) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            got, body = ready(url)
            if got == status or time.monotonic() > deadline:
                assert got == status, body
                return body
            time.sleep(0.3)

    env = project_env(tmp_path, REDIS_URL=redis_server.url)
    migrate(env)
    with serving("uvicorn", env, tmp_path / "uvicorn.log") as server:
        url = server.url("/readyz")
        assert set(wait_for(url, 200)["checks"]) == {"database", "channel_layer", "broker"}
        redis_server.stop()
        down = wait_for(url, 503)
        assert set(down["failed"]) == {"channel_layer", "broker"}
        assert down["checks"]["database"]["ok"]
        redis_server.start()
        assert wait_for(url, 200)["failed"] == []
