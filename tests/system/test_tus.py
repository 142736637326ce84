"""Resumable uploads (tus 1.0) against real uvicorn: an independent client (tuspy), a raw one for
every refusal, and a 300 MB upload cut at half, the server restarted, then resumed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tusclient import client as tus

from tests.e2e_client import Http
from tests.processes import Server, manage, migrate, project_env, serving
from tests.system.test_control_system import minute  # noqa: F401 - a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = "from django.contrib.auth.models import User; [User.objects.create_user(n) for n in ('alice', 'bob')]"
TUS = {"Tus-Resumable": "1.0.0"}


@contextmanager
def service(tmp_path: Path, **settings: str) -> Iterator[tuple[Server, dict[str, str], str, str]]:
    """uvicorn with its pool, and two users' API keys."""
    env = project_env(tmp_path, TRANSCRIPTION_WORKERS="1", **settings)
    migrate(env)
    with serving("uvicorn", env, tmp_path / "server.log") as server:
        manage(["shell", "-c", USERS], env)
        keys = [manage(["create_api_key", n], env).strip().splitlines()[-1] for n in ("alice", "bob")]
        yield server, env, keys[0], keys[1]


def call(
    server: Server,
    method: str,
    path: str,
    key: str | None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    sent = {**TUS, **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    connection.request(method, path, body if body or method == "PATCH" else None, sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def create(server: Server, key: str | None, length: int, name: str = "talk.wav") -> dict[str, str]:
    metadata = "filename " + base64.b64encode(name.encode()).decode()
    status, headers, body = call(
        server, "POST", "/api/uploads/", key, b"", {"Upload-Length": str(length), "Upload-Metadata": metadata}
    )
    assert status == 201, body
    return headers


def patch(
    server: Server, key: str | None, location: str, offset: int, chunk: bytes
) -> tuple[int, dict[str, str], bytes]:
    return call(
        server,
        "PATCH",
        location,
        key,
        chunk,
        {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )


def parts(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "media" / "uploads" / "partial").glob("*.part"))


async def wait_status(http: Http, task_id: str, wanted: set[str], timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(http.call, "GET", f"/api/tasks/{task_id}/")
        if status == 200 and (body.get("status") in wanted or body.get("stage") in wanted):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_tus_an_independent_client_uploads_in_chunks_and_the_job_runs(tmp_path, minute):  # noqa: F811
    with service(tmp_path, TRANSCRIPTION_UPLOAD_CHUNK_BYTES=str(256 * 1024)) as (server, env, alice, _):
        status, headers, _ = call(server, "OPTIONS", "/api/uploads/", None)
        assert (status, headers["tus-version"]) == (204, "1.0.0")
        assert "creation" in headers["tus-extension"]
        uploader = tus.TusClient(
            server.url("/api/uploads/"), headers={"Authorization": f"Bearer {alice}"}
        ).uploader(str(minute), chunk_size=256 * 1024, metadata={"filename": "minute.wav"})
        await asyncio.to_thread(uploader.upload)
        assert uploader.offset == minute.stat().st_size
        assert uploader.url is not None
        status, headers, _ = call(server, "HEAD", uploader.url.split(str(server.port), 1)[1], alice)
        assert status == 404  # finished: the upload is gone, its task goes on
        listed = await asyncio.to_thread(Http(server, key=alice).call, "GET", "/api/transcriptions/")
        assert listed[0] == 200
        task_id = next(t["task_id"] for t in listed[1]["tasks"] if t["name"] == "minute.wav")
        await wait_status(Http(server, key=alice), task_id, {"transcribing", "complete"})
        data_dir = Path(env["DATA_DIR"])
        stored = next(data_dir.joinpath("media", "uploads").glob(f"{task_id}*"))
        assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(minute.read_bytes()).digest()
        assert parts(data_dir) == []


async def test_tus_refusals_answer_as_documented_and_leave_nothing(tmp_path, minute):  # noqa: F811
    content = minute.read_bytes()
    limits = {
        "TRANSCRIPTION_UPLOAD_CHUNK_BYTES": str(64 * 1024),
        "TRANSCRIPTION_MAX_UPLOAD_BYTES": str(4 * 1024**2),
    }
    with service(tmp_path, **limits) as (server, env, alice, bob):
        data_dir = Path(env["DATA_DIR"])
        location = create(server, alice, len(content))["location"]
        assert patch(server, alice, location, 0, content[: 64 * 1024])[0] == 204
        # The wrong offset: 409, with the server's.
        status, headers, _ = patch(server, alice, location, 0, content[: 64 * 1024])
        assert (status, headers["upload-offset"]) == (409, str(64 * 1024))
        # More than a chunk in one request; past the upload's length; past the size limit.
        assert patch(server, alice, location, 64 * 1024, content[64 * 1024 : 64 * 1024 + 65 * 1024])[0] == 413
        status, _, body = call(
            server, "POST", "/api/uploads/", alice, b"", {"Upload-Length": str(5 * 1024**2)}
        )
        assert (status, b"file_too_large" in body) == (413, True)
        # No Tus-Resumable: 412.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("HEAD", location, headers={"Authorization": f"Bearer {alice}"})
        assert connection.getresponse().status == 412
        # Another user: the 404 of a missing upload, for HEAD, PATCH and DELETE alike.
        missing = location.rsplit("/", 1)[0] + "/not-an-upload"
        for method in ("HEAD", "PATCH", "DELETE"):
            extra = {"Upload-Offset": str(64 * 1024), "Content-Type": "application/offset+octet-stream"}
            theirs = call(server, method, location, bob, b"x" if method == "PATCH" else b"", extra)
            none = call(server, method, missing, bob, b"x" if method == "PATCH" else b"", extra)
            assert theirs[0] == none[0] == 404, method
            assert theirs[2] == none[2]
        assert call(server, "HEAD", location, alice)[1]["upload-offset"] == str(64 * 1024)  # untouched
        # The owner abandons it: the bytes and the task go.
        task_id = call(server, "HEAD", location, alice)[1]["upload-task-id"]
        assert call(server, "DELETE", location, alice)[0] == 204
        assert parts(data_dir) == []
        assert (await asyncio.to_thread(Http(server, key=alice).call, "GET", f"/api/tasks/{task_id}/"))[
            0
        ] == 404
        # Its task deleted (DELETE /api/tasks/<id>/): the upload and its bytes go with it.
        doomed = create(server, alice, len(content))
        assert patch(server, alice, doomed["location"], 0, content[:1000])[0] == 204
        deleted = await asyncio.to_thread(
            Http(server, key=alice).call, "DELETE", f"/api/tasks/{doomed['upload-task-id']}/"
        )
        assert deleted[0] == 204
        assert call(server, "HEAD", doomed["location"], alice)[0] == 404
        assert parts(data_dir) == []
        # Expired: gone, its bytes deleted, its task failed.
        expiring = create(server, alice, len(content))
        assert patch(server, alice, expiring["location"], 0, content[:1000])[0] == 204
        expire = "from transcription.models import Upload; Upload.objects.update(expires_at=0)"
        manage(["shell", "-c", expire], env)
        assert call(server, "HEAD", expiring["location"], alice)[0] == 404
        assert parts(data_dir) == []
        task = await wait_status(Http(server, key=alice), expiring["upload-task-id"], {"failed"})
        assert task["error"]["error_code"] == "upload_expired"  # type: ignore[index]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def big_wav(path: Path, size: int) -> None:
    """A WAV of about ``size`` bytes: 48 kHz stereo 16-bit, a quiet tone (compressible)."""
    frames = (size - 44) // 4
    data = frames * 4
    header = b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (2).to_bytes(2, "little") + (48000).to_bytes(4, "little")
    header += (48000 * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + data.to_bytes(4, "little")
    period = b"".join(((i % 48) * 40 - 960).to_bytes(2, "little", signed=True) * 2 for i in range(48))
    block = period * (1024 * 1024 // len(period))
    with path.open("wb") as out:
        out.write(header)
        left = data
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            left -= len(piece)


def send_partial(server: Server, key: str, location: str, offset: int, chunk: bytes, cut_at: int) -> None:
    """A PATCH whose connection is cut after ``cut_at`` bytes of its body, as a dropped network would."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("PATCH", location)
    headers = {**TUS, "Authorization": f"Bearer {key}", "Upload-Offset": str(offset)}
    headers |= {"Content-Type": "application/offset+octet-stream", "Content-Length": str(len(chunk))}
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(chunk[:cut_at])
    assert connection.sock is not None
    connection.sock.close()


async def test_tus_300_mb_cut_at_half_server_restarted_then_resumed(tmp_path):
    chunk_size = 8 * 1024 * 1024
    audio = tmp_path / "long.wav"
    big_wav(audio, 300 * 1024 * 1024)
    size = audio.stat().st_size
    env = project_env(tmp_path, TRANSCRIPTION_WORKERS="1")
    migrate(env)
    manage(["shell", "-c", USERS], env)
    key = manage(["create_api_key", "alice"], env).strip().splitlines()[-1]
    sent = 0
    with audio.open("rb") as source:
        with serving("uvicorn", env, tmp_path / "first.log") as server:
            await asyncio.sleep(1)
            idle = rss_kb(server.process.pid)
            peak = [idle]
            sampling = True

            def sample() -> None:
                while sampling:
                    peak[0] = max(peak[0], rss_kb(server.process.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            created = create(server, key, size, "long.wav")
            location, offset = created["location"], 0
            try:
                while offset < size // 2:
                    chunk = source.read(chunk_size)
                    status, headers, body = await asyncio.to_thread(
                        patch, server, key, location, offset, chunk
                    )
                    assert status == 204, body
                    sent += len(chunk)
                    offset = int(headers["upload-offset"])
                chunk = source.read(chunk_size)
                await asyncio.to_thread(send_partial, server, key, location, offset, chunk, chunk_size // 2)
                sent += chunk_size // 2
                await asyncio.sleep(0.5)
            finally:
                sampling = False
                sampler.join()
        print(
            f"\nserver RSS idle {idle / 1024:.1f} MB, peak while receiving {peak[0] / 1024:.1f} MB "
            f"(+{(peak[0] - idle) / 1024:.1f} MB)"
        )
        assert peak[0] - idle <= 50 * 1024
        with serving("uvicorn", env, tmp_path / "second.log") as server:
            status, headers, _ = call(server, "HEAD", location, key)
            assert status == 200
            offset = int(headers["upload-offset"])
            assert size // 2 <= offset <= size // 2 + chunk_size + chunk_size // 2  # kept what arrived
            source.seek(offset)
            while offset < size:
                chunk = source.read(chunk_size)
                status, headers, body = await asyncio.to_thread(patch, server, key, location, offset, chunk)
                assert status == 204, body
                sent += len(chunk)
                offset = int(headers["upload-offset"])
            print(f"sent {sent / 1024**2:.1f} MB for a {size / 1024**2:.1f} MB file")
            assert sent - size <= chunk_size  # at most one chunk sent twice
            task_id = created["upload-task-id"]
            stored = next(Path(env["DATA_DIR"]).joinpath("media", "uploads").glob(f"{task_id}*"))
            digest = hashlib.sha256()
            with audio.open("rb") as original:
                for block in iter(lambda: original.read(1 << 20), b""):
                    digest.update(block)
            mine = hashlib.sha256()
            with stored.open("rb") as copy:
                for block in iter(lambda: copy.read(1 << 20), b""):
                    mine.update(block)
            assert mine.digest() == digest.digest()
            await wait_status(Http(server, key=key), task_id, {"transcribing", "aligning", "complete"})
            await asyncio.to_thread(Http(server, key=key).call, "POST", f"/api/tasks/{task_id}/cancel")
    os.unlink(audio)


async def test_tus_too_long_is_refused_as_soon_as_its_header_is_here(tmp_path):
    audio = tmp_path / "long.wav"
    big_wav(audio, 20 * 1024 * 1024)  # its header declares about 109 s
    head = audio.read_bytes()[: 64 * 1024]
    with service(tmp_path, TRANSCRIPTION_MAX_AUDIO_SECONDS="60") as (server, env, alice, _):
        created = create(server, alice, audio.stat().st_size, "long.wav")
        status, _, body = patch(server, alice, created["location"], 0, head)
        assert (status, b"audio_too_long" in body) == (413, True)  # after 64 KiB of 20 MiB
        assert call(server, "HEAD", created["location"], alice)[0] == 404
        assert parts(Path(env["DATA_DIR"])) == []
        task = await wait_status(Http(server, key=alice), created["upload-task-id"], {"failed"})
        assert task["error"]["error_code"] == "upload_rejected"  # type: ignore[index]
