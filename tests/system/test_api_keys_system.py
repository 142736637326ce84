"""API keys over real HTTP and a real socket: uvicorn with its in-process pool, a script's requests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request

import pytest
import websockets

from progress.schemas import ProgressMessage, parse_server_message
from tests.e2e_client import Http
from tests.processes import ROOT, manage
from tests.system.test_control_system import service, short, upload  # noqa: F401 - short is a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = "from django.contrib.auth.models import User; [User.objects.create_user(n) for n in ('alice', 'bob')]"
REVOKE = (
    "from progress.models import ApiKey; from progress.keys import revoke; "
    "revoke(ApiKey.objects.get(prefix={!r}))"
)


def new_key(env: dict[str, str], user: str) -> str:
    return manage(["create_api_key", user, "--name", "test"], env).strip().splitlines()[-1]


def download(http: Http, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(http.server.url(path), headers={"Authorization": f"Bearer {http.key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_api_keys_upload_follow_download_delete_and_refusals(tmp_path, short):  # noqa: F811
    with service("pool", tmp_path) as running:
        env = running.env
        manage(["shell", "-c", USERS], env)
        alice_key, bob_key = new_key(env, "alice"), new_key(env, "bob")
        alice, bob = Http(running.server, key=alice_key), Http(running.server, key=bob_key)
        task_id = await upload(alice, short)  # no CSRF token: a bearer request needs none

        # The socket takes the same header; it runs until the transcription completes.
        url = running.server.ws_url(f"/ws/tasks/{task_id}/")
        headers = {"Authorization": f"Bearer {alice_key}"}
        stages = []
        async with websockets.connect(url, additional_headers=headers, proxy=None) as ws:
            async for raw in ws:
                frame = parse_server_message(raw)
                if isinstance(frame, ProgressMessage):
                    stages.append(frame.stage)
        assert ws.close_code == 1000
        assert stages[-1] == "complete"

        status, body = await asyncio.to_thread(alice.call, "GET", f"/api/tasks/{task_id}/")
        assert (status, body["status"]) == (200, "complete")
        status, srt = await asyncio.to_thread(download, alice, f"/api/tasks/{task_id}/result.srt")
        assert status == 200
        assert b"-->" in srt
        status, listed = await asyncio.to_thread(alice.call, "GET", "/api/transcriptions/")
        assert status == 200
        assert task_id in str(listed)

        # Another user's key: the same 404 as a task that does not exist, for every call.
        for method, path in [
            ("GET", f"/api/tasks/{task_id}/"),
            ("GET", f"/api/tasks/{task_id}/result"),
            ("POST", f"/api/tasks/{task_id}/retry"),
            ("POST", f"/api/tasks/{task_id}/cancel"),
            ("DELETE", f"/api/tasks/{task_id}/"),
        ]:
            theirs = await asyncio.to_thread(bob.call, method, path)
            missing = await asyncio.to_thread(bob.call, method, path.replace(task_id, "no-such-task"))
            assert theirs == missing, (method, path)
            assert theirs[0] == 404
        assert (await asyncio.to_thread(download, bob, f"/api/tasks/{task_id}/result.srt"))[0] == 404

        # No key, a wrong key and a revoked key: one 401 for all (no key at all is a cookie request).
        wrong = Http(running.server, key=alice_key[:-3] + "zzz")
        manage(["shell", "-c", REVOKE.format(bob_key.split("_")[1])], env)
        answers = [await asyncio.to_thread(h.call, "GET", "/api/transcriptions/") for h in (wrong, bob)]
        assert answers[0] == answers[1]
        assert answers[0][0] == 401
        # Where an account is needed, no key at all gets that same 401.
        nobody = Http(running.server)
        secrets = [
            await asyncio.to_thread(h.call, "GET", "/api/webhooks/secret/") for h in (nobody, wrong, bob)
        ]
        assert secrets[0] == secrets[1] == secrets[2] == answers[0]
        # The socket: a wrong or revoked key opens nothing (closed as for a missing task); without
        # a key, a client with no Origin is refused at the handshake.
        for sent in (wrong.key, bob_key):
            async with websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {sent}"}, proxy=None
            ) as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4404
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, proxy=None):
                pass

        status, _ = await asyncio.to_thread(alice.call, "DELETE", f"/api/tasks/{task_id}/")
        assert status in (200, 204)
        assert (await asyncio.to_thread(alice.call, "GET", f"/api/tasks/{task_id}/"))[0] == 404
        assert alice_key not in running.log()


async def test_api_keys_uploads_per_minute_answer_429_with_retry_after(tmp_path, short):  # noqa: F811
    content = short.read_bytes()
    with service("pool", tmp_path, TRANSCRIPTION_UPLOADS_PER_MINUTE="2") as running:
        manage(["shell", "-c", USERS], running.env)
        key = new_key(running.env, "alice")
        first, second = Http(running.server, key=key), Http(running.server, "127.0.0.2", key=key)
        answers = [await asyncio.to_thread(first.upload, short.name, content) for _ in range(2)]
        assert [status for status, _ in answers] == [201, 201]
        # The same key from another address: the key's (and its user's) two are spent.
        status, body = await asyncio.to_thread(second.upload, short.name, content)
        assert (status, body["error"]) == (429, "too_many_uploads")
        assert 1 <= int(second.headers["Retry-After"]) <= 60


async def test_api_keys_bytes_per_day_answer_429_with_retry_after(tmp_path, short):  # noqa: F811
    content = short.read_bytes()
    with service("pool", tmp_path, TRANSCRIPTION_MAX_BYTES_PER_DAY=str(len(content) * 2 + 4096)) as running:
        manage(["shell", "-c", USERS], running.env)
        # Two keys of one user share its day's bytes (a request's body: the file and its form headers).
        first, second = (Http(running.server, key=new_key(running.env, "alice")) for _ in range(2))
        assert (await asyncio.to_thread(first.upload, short.name, content))[0] == 201
        assert (await asyncio.to_thread(second.upload, short.name, content))[0] == 201
        status, body = await asyncio.to_thread(first.upload, short.name, content)
        assert (status, body["error"]) == (429, "daily_quota")
        assert 60 < int(first.headers["Retry-After"]) <= 24 * 3600


async def test_api_keys_the_readmes_python_client_gets_the_srt(tmp_path, short):  # noqa: F811
    with service("pool", tmp_path) as running:
        manage(["shell", "-c", USERS], running.env)
        key = new_key(running.env, "alice")
        audio = tmp_path / "interview.wav"
        audio.write_bytes(short.read_bytes())
        script = ROOT / "examples" / "api_client.py"
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script), running.server.url("/"), key, str(audio)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1].startswith("complete")
        assert "-->" in (tmp_path / "interview.wav.srt").read_text()
