"""End to end across real processes: redis-server, two daphne servers and Celery workers, or the embedded
default (one server, no Redis, in-process pool); real speech uploaded over HTTP, watched over WebSockets."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from progress import watch_token
from progress.schemas import ErrorMessage, ProgressMessage
from tests.conftest import RedisServer
from tests.e2e_client import Http, Watcher, celery_worker, children, files_under, slow_upload
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from tests.processes import Server, daphne, migrate, project_env, runserver, serving, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

STALE_AFTER = 3.0
STAGES = ["uploading", "queued", "transcribing", "aligning", "diarizing", "complete"]
"""What a watcher of an upload sees: a direct upload is queued only once its file is stored."""
MAX_UPLOAD = 5 * 1024 * 1024


@dataclass
class Stack:
    """The processes of one topology and what the tests need to reach them."""

    env: dict[str, str]
    data_dir: Path
    servers: list[Server]
    redis: RedisServer | None

    def log(self, name: str) -> Path:
        return self.data_dir / f"{name}-{time.monotonic_ns()}.log"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return project_env(
        data_dir,
        PROGRESS_STALE_AFTER=str(STALE_AFTER),
        PROGRESS_HEARTBEAT_INTERVAL="1",
        TRANSCRIPTION_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        **extra,
    )


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server and two daphne processes sharing one SQLite database and media root."""
    data_dir = tmp_path_factory.mktemp("scaled")
    redis = RedisServer(data_dir)
    redis.start()
    try:
        env = _env(data_dir, REDIS_URL=redis.url)
        migrate(env)
        with ExitStack() as servers:
            stack = Stack(env, data_dir, [], redis)
            for n in (1, 2):
                stack.servers.append(servers.enter_context(daphne(env, stack.log(f"daphne{n}"))))
            yield stack
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The README's run command: one server, SQLite, in-memory layer, in-process job pool."""
    data_dir = tmp_path_factory.mktemp("embedded")
    env = _env(data_dir)
    migrate(env)
    stack = Stack(env, data_dir, [], None)
    with runserver(env, stack.log("runserver")) as server:
        stack.servers.append(server)
        yield stack


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 8 s of spoken English."""
    return make_speech_wav(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40 s of spoken English: several seconds of transcription to interrupt."""
    return make_speech_wav(tmp_path_factory.mktemp("long"), seconds_min=40)


async def upload(stack: Stack, audio: Path) -> tuple[Http, str]:
    client = Http(stack.servers[0])
    content = await asyncio.to_thread(audio.read_bytes)
    status, body = await asyncio.to_thread(client.upload, audio.name, content)
    assert status == 201, body
    assert set(body) == {"task_id", "watch_token", "ws_url", "status_url", "result_url", "share_url"}
    return client, body["task_id"]


async def watch(
    stack: Stack, task_id: str, last_seq: int = 0, attempt: int | None = None
) -> tuple[list[Watcher], list[asyncio.Task[None]]]:
    """A watcher on every server (resuming after ``last_seq``), connected, until ``attempt`` ends."""
    watchers = [Watcher(server, task_id, last_seq=last_seq) for server in stack.servers]
    tasks = [asyncio.create_task(w.run(attempt)) for w in watchers]
    await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 30)
    return watchers, tasks


def assert_complete_transcript(client: Http, task_id: str, audio: Path) -> None:
    status, result = client.call("GET", f"/api/tasks/{task_id}/result")
    assert status == 200, result
    assert fraction_recognised(spoken_text(audio), result["text"]) >= 0.6
    assert result["words"]
    assert all(s["speaker"] for s in result["segments"])


def wait_for_progress(watcher: Watcher, stage: str, at_least: int, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while not any(p >= at_least for p in watcher.live(stage)):
        assert time.monotonic() < deadline, f"no {stage} progress ≥ {at_least}: {watcher.frames}"
        time.sleep(0.05)


async def test_e2e_scaled_watchers_on_both_servers_see_every_stage(scaled, speech):
    client, task_id = await upload(scaled, speech)
    watchers, tasks = await watch(scaled, task_id)
    worker = await asyncio.to_thread(celery_worker, scaled.env, scaled.log("worker"))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        stop(worker)
    for watcher in watchers:
        assert watcher.stages() == STAGES
        transcribing = watcher.live("transcribing")
        assert len(transcribing) >= 2
        assert transcribing == sorted(set(transcribing))
        assert isinstance(watcher.final, ProgressMessage)
    assert_complete_transcript(client, task_id, speech)


async def test_e2e_scaled_killed_worker_fails_every_watcher_then_retry_completes(scaled, long_speech):
    client, task_id = await upload(scaled, long_speech)
    watchers, tasks = await watch(scaled, task_id)
    worker = await asyncio.to_thread(celery_worker, scaled.env, scaled.log("worker"))
    try:
        await asyncio.to_thread(wait_for_progress, watchers[0], "transcribing", 10)
        killed_at = time.monotonic()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        await asyncio.wait_for(asyncio.gather(*tasks), STALE_AFTER * 4 + 30)
    finally:
        stop(worker)
    for watcher in watchers:
        error = watcher.final
        assert isinstance(error, ErrorMessage)
        assert (error.error_code, error.attempt) == ("worker_lost", 1)
        arrived = next(t for t, f in watcher.frames if f is error)
        print(f"worker_lost reached a watcher {arrived - killed_at:.2f} s after SIGKILL")
    status, snapshot = client.call("GET", f"/api/tasks/{task_id}/")
    assert (status, snapshot["status"], snapshot["error"]["error_code"]) == (200, "failed", "worker_lost")

    worker = await asyncio.to_thread(celery_worker, scaled.env, scaled.log("worker"))
    try:
        resumed, tasks = await watch(scaled, task_id, last_seq=watchers[0].last_seq, attempt=2)
        status, body = client.call("POST", f"/api/tasks/{task_id}/retry")
        assert (status, body["attempt"]) == (202, 2)
        await asyncio.wait_for(asyncio.gather(*tasks), 180)
    finally:
        stop(worker)
    for watcher in resumed:
        final = watcher.final
        assert isinstance(final, ProgressMessage)
        assert (final.stage, final.attempt) == ("complete", 2)
        again = STAGES[1:]  # a retry starts queued: its audio is stored already
        assert watcher.stages()[-len(again) :] == again
    assert_complete_transcript(client, task_id, long_speech)


async def test_e2e_scaled_redis_restart_watchers_catch_up(scaled, long_speech):
    assert scaled.redis is not None
    worker = await asyncio.to_thread(celery_worker, scaled.env, scaled.log("worker"))
    try:
        client, task_id = await upload(scaled, long_speech)
        watchers, tasks = await watch(scaled, task_id)
        await asyncio.to_thread(wait_for_progress, watchers[0], "transcribing", 5)
        scaled.redis.stop()
        await asyncio.sleep(1.5)
        scaled.redis.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 180)
        assert worker.poll() is None
    finally:
        stop(worker)
    for watcher in watchers:
        assert isinstance(watcher.final, ProgressMessage)
        assert watcher.stages() == STAGES
        print(f"watcher on :{watcher.server.port} reconnected {watcher.reconnects} times")
    for server in scaled.servers:
        assert server.process.poll() is None
        stranger = Http(server)  # another session: reads with the watch token
        assert (
            stranger.call("GET", f"/api/tasks/{task_id}/?token={watch_token(task_id)}")[1]["status"]
            == "complete"
        )
        assert "Exception inside application" not in server.log()  # closed with 4503, no traceback
    assert_complete_transcript(client, task_id, long_speech)


async def test_e2e_scaled_redelivered_job_does_not_run_twice(scaled, long_speech):
    """A prefork child killed mid-job: Celery requeues its turn; the redelivered turn finds nothing
    waiting and does nothing, and the reaper fails the task."""
    log = scaled.log("prefork")
    worker = await asyncio.to_thread(celery_worker, scaled.env, log, "prefork")
    try:
        _, task_id = await upload(scaled, long_speech)
        watchers, tasks = await watch(scaled, task_id)
        await asyncio.to_thread(wait_for_progress, watchers[0], "transcribing", 10)
        (child,) = children(worker.pid)
        os.kill(child, signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*tasks), STALE_AFTER * 4 + 30)
        skipped = f"a turn (queued for task {task_id} attempt 1) found no task waiting"
        deadline = time.monotonic() + 30
        while skipped not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.1)
    finally:
        stop(worker)
    assert log.read_text(errors="replace").count("Task transcription.transcribe[") >= 2
    for watcher in watchers:
        assert isinstance(watcher.final, ErrorMessage)
        assert watcher.final.error_code == "worker_lost"
        assert watcher.live("aligning") == []


def assert_rejects_leave_nothing(stack: Stack) -> None:
    client = Http(stack.servers[-1])
    media = stack.data_dir / "media"
    before = set(files_under(media))
    status, body = client.upload("notes.wav", b"plain text, not audio\n" * 50)
    assert (status, body["error"]) == (415, "not_audio")
    status, body = client.upload("empty.wav", b"")
    assert (status, body["error"]) == (400, "empty_file")
    status, body = client.upload("big.wav", b"RIFF\x00\x00\x00\x00WAVE" + bytes(MAX_UPLOAD + 100_000))
    assert (status, body["error"]) == (413, "file_too_large")
    status, body = client.upload("big.wav", b"RIFF\x00\x00\x00\x00WAVE" + bytes(MAX_UPLOAD))
    assert (status, body["error"]) == (413, "file_too_large")
    assert set(files_under(media)) == before


def test_e2e_scaled_bad_uploads_get_4xx_and_leave_nothing(scaled):
    assert_rejects_leave_nothing(scaled)


async def test_e2e_embedded_upload_watch_and_result(embedded, speech):
    client, task_id = await upload(embedded, speech)
    watchers, tasks = await watch(embedded, task_id)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    watcher = watchers[0]
    assert watcher.stages() == STAGES, watcher.frames
    assert isinstance(watcher.final, ProgressMessage)
    assert watcher.live("diarizing") == sorted(set(watcher.live("diarizing")))
    assert_complete_transcript(client, task_id, speech)


def test_e2e_embedded_bad_uploads_get_4xx_and_leave_nothing(embedded):
    assert_rejects_leave_nothing(embedded)


async def test_e2e_streaming_server_reports_upload_progress_live(embedded, speech):
    """Under uvicorn the app receives the body as it arrives (daphne buffers it first), so a watcher
    of a reserved task sees `uploading` rise while the file is still being sent."""
    content = await asyncio.to_thread(speech.read_bytes)
    with serving("uvicorn", embedded.env, embedded.log("uvicorn")) as server:
        client = Http(server)
        status, links = await asyncio.to_thread(client.call, "POST", "/api/tasks/reserve")
        assert status == 201, links
        task_id = links["task_id"]
        watchers, tasks = await watch(Stack(embedded.env, embedded.data_dir, [server], None), task_id)
        status = await slow_upload(server, links["upload_url"], client.cookies(), "a.wav", content, 10, 0.4)
        assert status == 201
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    uploading = watchers[0].live("uploading")
    assert len(uploading) >= 3
    assert uploading == sorted(set(uploading))
    assert watchers[0].stages() == STAGES


async def test_e2e_embedded_undecodable_audio_fails_the_watchers(embedded, tmp_path):
    whole = tmp_path / "whole.flac"
    command = ["sox", "-n", "-r", "16000", str(whole), "synth", "3", "sine", "440"]
    await asyncio.to_thread(subprocess.run, command, check=True)
    broken = tmp_path / "broken.flac"
    # Its header says 3 s, so the upload is taken; its frames stop halfway, so the decode fails.
    broken.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    client, task_id = await upload(embedded, broken)
    watchers, tasks = await watch(embedded, task_id)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    error = watchers[0].final
    assert isinstance(error, ErrorMessage)
    assert error.error_code == "invalid_audio"
    assert error.user_message
    status, body = client.call("GET", f"/api/tasks/{task_id}/result")
    assert (status, body["status"]) == (409, "failed")


async def test_e2e_scaled_worker_sigterm_finishes_its_job(scaled, long_speech):
    """SIGTERM is Celery's warm shutdown: the running job completes, then the worker exits (acks_late:
    its message is acknowledged only now, so nothing is lost and nothing is left queued)."""
    worker = await asyncio.to_thread(celery_worker, scaled.env, scaled.log("worker"))
    try:
        client, task_id = await upload(scaled, long_speech)
        watchers, tasks = await watch(scaled, task_id)
        await asyncio.to_thread(wait_for_progress, watchers[0], "transcribing", 5)
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 180)
        await asyncio.to_thread(worker.wait, 60)
    finally:
        stop(worker)
    for watcher in watchers:
        assert isinstance(watcher.final, ProgressMessage)
        assert watcher.stages() == STAGES
    assert_complete_transcript(client, task_id, long_speech)
