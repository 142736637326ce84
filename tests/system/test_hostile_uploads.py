"""A hostile client against real servers: audio bombs, lying and absurd headers, upload floods, the admin,
sessions. Each test starts its own server processes on loopback (uvicorn as in production; daphne
where it differs) and talks to them over HTTP, from several loopback addresses where it plays several
clients."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from progress.schemas import ErrorMessage
from tests.conftest import RedisServer
from tests.e2e_client import Http, Watcher, celery_worker, files_under
from tests.fixtures_audio import make_speech_wav
from tests.processes import Server, manage, migrate, project_env, serving, stop
from transcription.audio import BYTES_PER_SECOND

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT_SECONDS = 1800
"""The servers' audio length limit here: half an hour, the longest recording the service is for."""


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Silence that compresses to little and decodes to much: FLAC of ten hours, Ogg and MP3 of one."""
    folder = tmp_path_factory.mktemp("bombs")
    made = {
        "flac": (folder / "ten-hours.flac", ("-r", "8000"), 36_000),
        "ogg": (folder / "one-hour.ogg", ("-r", "8000", "-C", "-1"), 3_600),
        "mp3": (folder / "one-hour.mp3", ("-r", "8000", "-C", "8"), 3_600),
    }
    for path, options, seconds in made.values():
        sox("-n", *options, "-c", "1", str(path), "trim", "0", str(seconds))
    return {kind: path for kind, (path, _, _) in made.items()}


def env_for(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = project_env(tmp_path, TRANSCRIPTION_MAX_AUDIO_SECONDS=str(LIMIT_SECONDS), **overrides)
    migrate(env)
    return env


def wav(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(cid + struct.pack("<I", len(data)) + data for cid, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def fmt(rate: int, channels: int = 1, bits: int = 16) -> tuple[bytes, bytes]:
    block = channels * bits // 8
    return b"fmt ", struct.pack(
        "<HHIIHH", 1, channels, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF, block, bits
    )


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
def test_hostile_audio_bombs_are_refused_at_upload_with_nothing_decoded(tmp_path, bombs, kind):
    env = env_for(tmp_path)
    with serving(kind, env, tmp_path / "server.log") as server:
        client = Http(server)
        for name, path in bombs.items():
            started = time.monotonic()
            status, body = client.upload(path.name, path.read_bytes())
            took = time.monotonic() - started
            print(
                f"{kind}: {name} bomb of {path.stat().st_size / 1e6:.1f} MB refused in {took:.2f} s: {body}"
            )
            assert (status, body["error"]) == (413, "audio_too_long"), name
        assert client.call("GET", "/api/transcriptions/")[1]["tasks"] == []  # no task was made
    assert files_under(tmp_path / "media") == []  # nothing stored, nothing decoded


def test_hostile_wav_headers_are_refused_at_upload(tmp_path):
    samples = (b"data", bytes(32_000))
    hostile = {
        "two format headers": wav([fmt(100), fmt(192_000), samples]),
        "rate 0xFFFFFFFF": wav([fmt(0xFFFFFFFF), samples]),
        "no channels": wav([fmt(16_000, channels=0), samples]),
        "rate 0": wav([fmt(0), samples]),
    }
    with serving("uvicorn", env_for(tmp_path), tmp_path / "server.log") as server:
        client = Http(server)
        for name, content in hostile.items():
            status, body = client.upload("x.wav", content)
            assert (status, body["error"]) == (415, "invalid_audio"), name
    assert files_under(tmp_path / "media") == []


@pytest.mark.redis
async def test_hostile_decode_stops_at_the_workers_limit_with_bounded_disk(
    tmp_path, redis_server: RedisServer
):
    """The server takes a recording whose header says 60 s; the worker's limit is 4 s (lower than the
    server's, as after an operator lowers it), so only its decoder stands between the file and the disk."""
    limit, seconds = 4, 60
    env = env_for(tmp_path, REDIS_URL=redis_server.url)
    recording = tmp_path / "one-minute.wav"  # 44.1 kHz stereo: sox decodes it, it is not read in place
    sox("-n", "-r", "44100", "-c", "2", "-b", "16", str(recording), "synth", str(seconds), "sine", "440")
    worker_env = {**env, "TRANSCRIPTION_MAX_AUDIO_SECONDS": str(limit)}
    with serving("uvicorn", env, tmp_path / "server.log") as server:
        status, body = await asyncio.to_thread(Http(server).upload, recording.name, recording.read_bytes())
        assert status == 201, body
        watcher = Watcher(server, body["task_id"])
        watching = asyncio.create_task(watcher.run())
        worker = await asyncio.to_thread(celery_worker, worker_env, tmp_path / "worker.log")
        try:
            await asyncio.wait_for(watching, 120)
        finally:
            stop(worker)
    error = watcher.final
    assert isinstance(error, ErrorMessage)
    assert error.error_code == "audio_too_long"
    assert "transcribing" in watcher.stages()  # it failed in the job, not at upload
    peak = int(re.search(r"with (\d+) bytes of samples on disk", error.technical_detail or "")[1])  # type: ignore[index]
    bound, whole = limit * BYTES_PER_SECOND, seconds * BYTES_PER_SECOND
    print(
        f"decoded samples on disk at the peak: {peak} bytes (the limit's {bound}; the whole file's {whole})"
    )
    assert 0 < peak <= bound
    assert files_under(tmp_path / "media" / "tmp") == []


def test_hostile_upload_flood_is_limited_while_another_owner_goes_first(tmp_path):
    """25 uploads from one session, then 25 from one address with a new session each: the 21st of each
    gets 429 with Retry-After. Meanwhile another owner's file starts while the first owner's wait."""
    env = env_for(tmp_path, TRANSCRIPTION_WORKERS="1")
    # Long enough that few of them run while the twenty are sent, however slow the machine.
    speech = make_speech_wav(tmp_path / "speech", seconds_min=20).read_bytes()
    with serving("uvicorn", env, tmp_path / "server.log") as server:
        flooder = Http(server, source="127.0.0.2")
        answers = [flooder.upload(f"take-{i}.wav", speech) for i in range(20)]
        assert [status for status, _ in answers] == [201] * 20
        other = Http(server, source="127.0.0.3")
        status, body = other.upload("mine.wav", speech)
        assert status == 201, body
        for _ in range(5):
            status, refused = flooder.upload("one-more.wav", speech)
            assert (status, refused["error"]) == (429, "too_many_uploads")
            assert 1 <= int(flooder.headers["Retry-After"]) <= 60
        mine, theirs = body["task_id"], [a["task_id"] for _, a in answers]
        deadline = time.monotonic() + 120
        while (started := _times(tmp_path, mine)[1]) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        queued = _times(tmp_path, mine)[0]
        assert started is not None
        # From the database's own clock: which of the first owner's files were waiting when the second
        # owner's joined the line, and which of those started before it.
        starts = {t: _times(tmp_path, t)[1] for t in theirs}
        ahead = [t for t, at in starts.items() if at is None or at > queued]
        jumped = [t for t in ahead if (at := starts[t]) is not None and at < started]
        print(
            f"the second owner's file joined the line at {queued[11:23]} and started at {started[11:23]};"
            f" of the {len(ahead)} files the first owner had waiting then, {len(jumped)} started before it"
        )
        assert len(ahead) >= 5  # the second owner went ahead of these
        assert jumped == []  # the next turn after it joined was its own
        assert other.call("GET", f"/api/tasks/{mine}/")[1]["status"] != "failed"

        fresh = [Http(server, source="127.0.0.4") for _ in range(25)]
        statuses = [client.upload("notes.txt", b"not audio\n" * 100)[0] for client in fresh]
        assert statuses == [415] * 20 + [429] * 5  # counted by address, before the body is read
        assert 1 <= int(fresh[-1].headers["Retry-After"]) <= 60


def _times(data_dir: Path, task_id: str) -> tuple[str, str | None]:
    """When the task joined the line (its ``queued`` event) and when a job claimed it, as stored."""
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        (queued,) = db.execute(
            "select created_at from progress_taskevent where task_id = ? and stage = 'queued'", (task_id,)
        ).fetchone()
        (started,) = db.execute(
            "select started_at from progress_task where task_id = ?", (task_id,)
        ).fetchone()
    return str(queued), started


def _session_rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        return int(db.execute("select count(*) from django_session").fetchone()[0])


@pytest.fixture
def with_staff(tmp_path: Path) -> dict[str, str]:
    env = env_for(tmp_path, DJANGO_SUPERUSER_PASSWORD="right-password-for-tests")
    manage(["createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com"], env)
    return env


def _admin_login(server: Server, jar_client: Http, password: str) -> int:
    """POST the admin login form as a browser would (its CSRF cookie and field); the status, unredirected."""
    jar_client.call("GET", "/api/csrf/")
    token = next(c.value for c in jar_client.jar if c.name == "csrftoken")
    data = urllib.parse.urlencode({"username": "ops", "password": password, "csrfmiddlewaretoken": token})
    request = urllib.request.Request(
        server.url("/admin/login/?next=/admin/"),
        data=data.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": server.url("/admin/login/")},
    )
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar_client.jar), _NoRedirect())
    jar_client.token = ""  # a login rotates the CSRF token: the client fetches the new one next time
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Never follow: the test reads the login's own answer."""
        return None


def test_hostile_admin_denies_framing_and_throttles_guesses(tmp_path, with_staff):
    with serving("uvicorn", with_staff, tmp_path / "server.log") as server:
        for path in ["/", "/admin/", "/admin/login/", "/api/transcriptions/", "/tasks/nothing/"]:
            try:
                with urllib.request.urlopen(server.url(path), timeout=30) as response:
                    headers = response.headers
            except urllib.error.HTTPError as exc:
                headers = exc.headers
            assert headers["X-Frame-Options"] == "DENY", path
            if headers["Content-Type"].startswith("text/html"):
                assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        guesser = Http(server)
        assert [_admin_login(server, guesser, f"guess-{i}") for i in range(10)] == [200] * 10
        assert _admin_login(server, guesser, "right-password-for-tests") == 429
        assert _admin_login(server, Http(server, source="127.0.0.5"), "right-password-for-tests") == 429


def test_hostile_sessions_only_when_needed_and_kept_through_login(tmp_path, with_staff):
    with serving("uvicorn", with_staff, tmp_path / "server.log") as server:
        for _ in range(200):
            with urllib.request.urlopen(server.url("/"), timeout=30) as response:
                assert "sessionid" not in (response.headers["Set-Cookie"] or "")
        assert _session_rows(tmp_path) == 0
        visitor = Http(server)
        status, body = visitor.upload("note.wav", make_speech_wav(tmp_path / "speech").read_bytes())
        assert status == 201, body
        assert _admin_login(server, visitor, "right-password-for-tests") == 302
        assert visitor.call("POST", "/admin/logout/")[0] == 200
        assert visitor.call("GET", "/api/transcriptions/")[1]["tasks"] == []
        assert _admin_login(server, visitor, "right-password-for-tests") == 302
        listed = visitor.call("GET", "/api/transcriptions/")[1]["tasks"]
        assert [row["task_id"] for row in listed] == [body["task_id"]]
