"""/readyz on a real server follows a real Redis going away and coming back."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.processes import migrate, project_env, serving


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.redis
def test_health_readyz_follows_redis_on_a_real_server(tmp_path, redis_server):
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
