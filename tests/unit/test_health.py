"""/healthz and /readyz: liveness, and readiness naming what is unreachable, with latencies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import HttpCommunicator

from progress import health
from tests.conftest import application

pytestmark = [pytest.mark.django_db(transaction=True)]


async def get(path: str) -> tuple[int, dict[str, Any]]:
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

    now = [1000.0]
    monkeypatch.setattr(health, "clock", lambda: now[0])
    monkeypatch.setitem(health._checks, "database", counted)
    for _ in range(5):
        await get("/readyz")
    assert len(calls) == 1
    now[0] += health.CACHE_SECONDS - 0.01
    await get("/readyz")
    assert len(calls) == 1
    now[0] += 0.01
    await get("/readyz")
    assert len(calls) == 2
