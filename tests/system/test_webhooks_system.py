"""Webhooks over real processes: a receiver on 127.0.0.1 that fails twice, then a server killed
between tries; the signature checked with the documented recipe; private addresses refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_client import Http
from tests.processes import ROOT, free_port, manage, migrate, project_env, serving, spawn, stop, wait_for_port
from tests.system.test_control_system import short  # noqa: F401 - a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER = "from django.contrib.auth.models import User; User.objects.create_user('alice')"


@contextmanager
def receiver(tmp_path: Path, answers: str) -> Iterator[tuple[str, Path]]:
    """The receiver process: its URL and the file it logs each request to."""
    port, log = free_port(), tmp_path / "received.jsonl"
    args = [sys.executable, "-m", "tests.webhook_receiver", str(port), str(log), answers]
    process = spawn(args, {**os.environ, "PYTHONPATH": str(ROOT)}, tmp_path / "receiver.log")
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/hooks/transcribed", log
    finally:
        stop(process)


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def wait_received(log: Path, count: int, timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(got := received(log)) < count:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.1)
    return got


def verified(secret: str, request: dict[str, Any]) -> bool:
    """The documented recipe: HMAC-SHA256 with the secret over ``f"{timestamp}.{body}"``, hex, ``v1=``."""
    headers = request["headers"]
    signed = f"{headers['Webhook-Timestamp']}.{request['body']}".encode()
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["Webhook-Signature"])


def account(env: dict[str, str]) -> tuple[str, str]:
    """alice's API key and webhook secret."""
    manage(["shell", "-c", USER], env)
    key = manage(["create_api_key", "alice"], env).strip().splitlines()[-1]
    return key, manage(["webhook_secret", "alice"], env).strip()


async def test_webhooks_retried_with_one_event_id_until_a_2xx(tmp_path, short):  # noqa: F811
    with receiver(tmp_path, "500,500,200") as (url, log):
        env = project_env(tmp_path, WEBHOOK_ALLOW_PRIVATE="1", PROGRESS_WEBHOOK_RETRY_BASE="1")
        migrate(env)
        with serving("uvicorn", env, tmp_path / "server.log") as server:
            key, secret = account(env)
            client = Http(server, key=key)
            status, body = await asyncio.to_thread(
                client.upload, short.name, short.read_bytes(), "", {"callback_url": url}
            )
            assert status == 201, body
            tries = await wait_received(log, 3)
            await asyncio.sleep(2)  # no fourth try after the 2xx
            tries = received(log)
            assert [t["status"] for t in tries] == [500, 500, 200]
            assert len({t["headers"]["Webhook-Id"] for t in tries}) == 1
            assert all(verified(secret, t) for t in tries)
            event = json.loads(tries[-1]["body"])
            assert (event["task_id"], event["status"], event["error_code"]) == (
                body["task_id"],
                "complete",
                None,
            )
            assert event["event_id"] == tries[0]["headers"]["Webhook-Id"]
            status, result = await asyncio.to_thread(
                client.call, "GET", event["result_url"].split(str(server.port), 1)[1]
            )
            assert status == 200, result
            stamps = [int(t["headers"]["Webhook-Timestamp"]) for t in tries]
            assert stamps[1] - stamps[0] <= 10  # the first retry within 10 s


async def test_webhooks_survive_a_killed_server_and_arrive_once(tmp_path, short):  # noqa: F811
    with receiver(tmp_path, "500,200") as (url, log):
        env = project_env(tmp_path, WEBHOOK_ALLOW_PRIVATE="1", PROGRESS_WEBHOOK_RETRY_BASE="8")
        migrate(env)
        with serving("uvicorn", env, tmp_path / "first.log") as server:
            key, secret = account(env)
            status, body = await asyncio.to_thread(
                Http(server, key=key).upload, short.name, short.read_bytes(), "", {"callback_url": url}
            )
            assert status == 201, body
            await wait_received(log, 1)
            os.killpg(server.process.pid, signal.SIGKILL)  # the server and its in-process workers
            server.process.wait(10)
        with serving("uvicorn", env, tmp_path / "second.log"):
            tries = await wait_received(log, 2, timeout=60)
            await asyncio.sleep(3)
        tries = received(log)
        assert [t["status"] for t in tries] == [500, 200]  # exactly once as 2xx
        assert tries[0]["headers"]["Webhook-Id"] == tries[1]["headers"]["Webhook-Id"]
        assert all(verified(secret, t) for t in tries)


async def test_webhooks_private_callbacks_refused_while_the_setting_is_off(tmp_path, short):  # noqa: F811
    env = project_env(tmp_path)
    migrate(env)
    with serving("uvicorn", env, tmp_path / "server.log") as server:
        key, _ = account(env)
        content = short.read_bytes()
        for url in (
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest",
            "http://10.0.0.7/x",
            "ftp://x/",
        ):
            status, body = await asyncio.to_thread(
                Http(server, key=key).upload, short.name, content, "", {"callback_url": url}
            )
            assert (status, body["error"]) == (400, "callback_refused"), url
        # A cookie session without an account has no secret to sign with.
        status, body = await asyncio.to_thread(
            Http(server).upload, short.name, content, "", {"callback_url": "https://93.184.216.34/x"}
        )
        assert (status, body["error"]) == (400, "callback_needs_account")
