"""Cancel, delete, retention and the line, over real processes: uvicorn with a Celery worker on
redis-server, and uvicorn with its in-process pool. Every request and socket is a real client's."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from websockets.typing import Origin

from progress import watch_token
from progress.schemas import CancelledMessage, ProgressMessage, QueueMessage, parse_server_message
from tests.conftest import started_redis
from tests.e2e_client import Http, celery_worker, files_under
from tests.fixtures_audio import make_speech_wav
from tests.processes import ORIGIN, Server, manage, migrate, project_env, serving, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Service:
    server: Server
    data_dir: Path
    env: dict[str, str]
    log_paths: list[Path]

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())


@contextmanager
def service(kind: str, tmp_path: Path, **settings: str) -> Iterator[Service]:
    """uvicorn plus one worker: a Celery worker on redis-server (``celery``) or its own pool (``pool``)."""
    with ExitStack() as stack:
        overrides = {"TRANSCRIPTION_WORKERS": "1", "PROGRESS_STALE_AFTER": "6", **settings}
        if kind == "celery":
            redis = started_redis(tmp_path)
            stack.callback(redis.stop)
            overrides["REDIS_URL"] = redis.url
        env = project_env(tmp_path, **overrides)
        migrate(env)
        logs = [tmp_path / "server.log"]
        server = stack.enter_context(serving("uvicorn", env, logs[0]))
        if kind == "celery":
            logs.append(tmp_path / "worker.log")
            worker = celery_worker(env, logs[1])
            stack.callback(stop, worker)
        yield Service(server, tmp_path, env, logs)


@pytest.fixture(scope="module")
def minute(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 60 s of speech: a job that runs long enough to cancel."""
    return make_speech_wav(tmp_path_factory.mktemp("minute"), seconds_min=60)


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_wav(tmp_path_factory.mktemp("short"))


class Watch:
    """A real WebSocket watcher of one task: every frame with its arrival time, and how it closed."""

    def __init__(self, server: Server, task_id: str) -> None:
        self.server, self.task_id = server, task_id
        self.frames: list[tuple[float, object]] = []
        self.close_code: int | None = None
        self.ready = asyncio.Event()
        self.runner = asyncio.create_task(self.run())

    async def run(self) -> None:
        url = self.server.ws_url(f"/ws/tasks/{self.task_id}/?token={watch_token(self.task_id)}")
        async with websockets.connect(url, origin=Origin(ORIGIN), proxy=None) as ws:
            self.ready.set()
            try:
                async for raw in ws:
                    self.frames.append((time.monotonic(), parse_server_message(raw)))
            except websockets.ConnectionClosed:
                pass  # a close other than 1000: kept below
            finally:
                self.close_code = ws.close_code

    def first(self, kind: type, stage: str | None = None, after: float = 0.0) -> float | None:
        """When the first frame of ``kind`` (in ``stage``) arrived after ``after``, or None."""
        for at, frame in self.frames:
            if (
                at >= after
                and isinstance(frame, kind)
                and (stage is None or getattr(frame, "stage", None) == stage)
            ):
                return at
        return None

    async def wait_for(
        self, kind: type, stage: str | None = None, timeout: float = 120, after: float = 0.0
    ) -> float:
        deadline = time.monotonic() + timeout
        while (at := self.first(kind, stage, after)) is None:
            assert time.monotonic() < deadline, (
                f"no {kind.__name__} {stage or ''} for {self.task_id}: {self.frames}"
            )
            await asyncio.sleep(0.02)
        return at

    def positions(self) -> list[int]:
        seen: list[int] = []
        for _, frame in self.frames:
            place = (
                frame.queue_position
                if isinstance(frame, QueueMessage)
                else getattr(frame, "queue_position", None)
            )
            if place is not None and (not seen or seen[-1] != place):
                seen.append(place)
        return seen


async def upload(client: Http, audio: Path) -> str:
    content = await asyncio.to_thread(audio.read_bytes)
    status, body = await asyncio.to_thread(client.upload, audio.name, content)
    assert status == 201, body
    return str(body["task_id"])


async def watch(server: Server, task_id: str) -> Watch:
    watcher = Watch(server, task_id)
    await asyncio.wait_for(watcher.ready.wait(), 30)
    return watcher


def cut_flac(folder: Path) -> Path:
    """A FLAC whose header passes the upload and whose frames stop halfway: its job fails to decode it."""
    whole = folder / "whole.flac"
    subprocess.run(["sox", "-n", "-r", "16000", str(whole), "synth", "3", "sine", "440"], check=True)
    broken = folder / "broken.flac"
    broken.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return broken


def rows_naming(data_dir: Path, task_id: str) -> int:
    """Rows of every table of the server's database that hold ``task_id`` in any column."""
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        found = 0
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'pragma table_info("{table}")')]
            for column in columns:
                query = f'select count(*) from "{table}" where cast("{column}" as text) like ?'
                found += db.execute(query, (f"%{task_id}%",)).fetchone()[0]
        return found


def started_at(data_dir: Path, task_id: str) -> str | None:
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        row = db.execute("select started_at from progress_task where task_id = ?", (task_id,)).fetchone()
        return None if row is None else row[0]


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["celery", "pool"])
async def test_control_cancel_a_waiting_and_a_running_job(tmp_path, kind, minute, short):
    with service(kind, tmp_path) as running:
        owner = Http(running.server)
        long_id = await upload(owner, minute)
        next_id, never_id = await upload(owner, short), await upload(owner, short)
        long_w, next_w, never_w = [await watch(running.server, t) for t in (long_id, next_id, never_id)]
        await long_w.wait_for(ProgressMessage, "transcribing")

        asked = time.monotonic()
        status, body = await asyncio.to_thread(owner.call, "POST", f"/api/tasks/{never_id}/cancel")
        assert (status, body["status"]) == (200, "cancelled")
        told_waiting = await never_w.wait_for(CancelledMessage) - asked

        asked = time.monotonic()
        status, body = await asyncio.to_thread(owner.call, "POST", f"/api/tasks/{long_id}/cancel")
        assert (status, body["status"]) == (200, "cancelled")
        told_running = await long_w.wait_for(CancelledMessage) - asked
        stopped = f"job {long_id} attempt 1 stopped: cancelled"
        while stopped not in running.log():
            assert time.monotonic() - asked < 30, running.log()[-3000:]
            await asyncio.sleep(0.02)
        job_stopped = time.monotonic() - asked
        next_started = await next_w.wait_for(ProgressMessage, "transcribing") - asked
        print(
            f"{kind}: cancelled frame {told_running * 1000:.0f} ms after the cancel (a waiting task's:"
            f" {told_waiting * 1000:.0f} ms); the job stopped after {job_stopped:.2f} s; the next task"
            f" was transcribing {next_started:.2f} s after the cancel"
        )
        assert told_waiting < 1
        assert told_running < 1
        assert job_stopped < 2
        assert next_started < 3
        await next_w.wait_for(ProgressMessage, "complete")
        again = await asyncio.to_thread(owner.call, "POST", f"/api/tasks/{long_id}/cancel")
        assert (again[0], again[1]["error"]) == (409, "not_running")
        assert started_at(running.data_dir, never_id) is None  # never claimed: nothing decoded
        assert never_w.first(ProgressMessage, "transcribing") is None
        assert long_w.first(ProgressMessage, "aligning") is None
        for watcher in (long_w, next_w, never_w):
            watcher.runner.cancel()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["celery", "pool"])
async def test_control_delete_leaves_nothing_of_a_finished_failed_or_running_task(
    tmp_path, kind, minute, short
):
    broken = await asyncio.to_thread(cut_flac, tmp_path)
    with service(kind, tmp_path) as running:
        owner = Http(running.server)
        finished = await upload(owner, short)
        failed = await upload(owner, broken)
        busy = await upload(owner, minute)
        watchers = {t: await watch(running.server, t) for t in (finished, failed, busy)}
        await watchers[finished].wait_for(ProgressMessage, "complete")
        await watchers[busy].wait_for(ProgressMessage, "transcribing")
        assert watchers[failed].frames  # the failure stays on its socket
        shares = {t: f"/transcriptions/{t}/?token={watch_token(t)}" for t in watchers}
        for task_id in (finished, failed, busy):
            status, _ = await asyncio.to_thread(owner.call, "DELETE", f"/api/tasks/{task_id}/")
            assert status == 204
        for task_id, watcher in watchers.items():
            await asyncio.wait_for(watcher.runner, 10)
            # A completed task's watchers were closed (1000) when it completed; the others were open.
            assert watcher.close_code == (1000 if task_id == finished else 4404), task_id
        stopped = f"job {busy} attempt 1 stopped: cancelled"
        deadline = time.monotonic() + 10
        while stopped not in running.log():  # its decoded samples go when the job stops
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        media = running.data_dir / "media"
        for task_id in watchers:
            assert [p for p in files_under(media) if task_id in p.name] == []
            assert rows_naming(running.data_dir, task_id) == 0, task_id
            stranger = Http(running.server)
            assert (await asyncio.to_thread(stranger.call, "GET", shares[task_id]))[0] == 404
            assert (await asyncio.to_thread(owner.call, "GET", f"/api/tasks/{task_id}/result"))[0] == 404
        assert [p for p in files_under(media / "tmp")] == []
        print(f"{kind}: after deleting 3 tasks, files under MEDIA_ROOT: {len(files_under(media))}")


async def test_control_only_the_owner_acts(tmp_path, short):
    with service("pool", tmp_path) as running:
        owner = Http(running.server)
        task_id = await upload(owner, short)
        token = watch_token(task_id)
        others = [Http(running.server), Http(running.server, source="127.0.0.9")]
        await upload(others[0], short)  # a session with a task of its own
        answers = []
        for client in others:
            for method, path in [
                ("POST", f"/api/tasks/{task_id}/cancel"),
                ("POST", f"/api/tasks/{task_id}/cancel?token={token}"),
                ("DELETE", f"/api/tasks/{task_id}/"),
                ("DELETE", f"/api/tasks/{task_id}/?token={token}"),
                ("POST", "/api/tasks/not-a-task/cancel"),
                ("DELETE", "/api/tasks/not-a-task/"),
            ]:
                answers.append(await asyncio.to_thread(client.call, method, path))
        assert {(status, body["error"]) for status, body in answers} == {(404, "not_found")}
        status, body = await asyncio.to_thread(owner.call, "GET", f"/api/tasks/{task_id}/")
        assert (status, body["status"]) in {(200, "running"), (200, "complete")}


async def test_control_five_files_see_their_place_fall_as_jobs_end(tmp_path, minute, short):
    with service("pool", tmp_path) as running:
        owner = Http(running.server)
        first = await upload(owner, minute)
        ids = [await upload(owner, short) for _ in range(5)]
        last = await watch(running.server, ids[-1])
        await last.wait_for(ProgressMessage, "complete", timeout=240)
        print(f"the fifth waiting file saw its place as: {last.positions()}")
        assert last.positions() == [4, 3, 2, 1, 0]
        last.runner.cancel()
        assert first


def test_control_housekeeping_deletes_old_tasks_and_expired_sessions_only(tmp_path, short):
    env = project_env(tmp_path, TRANSCRIPTION_KEEP_RESULTS="3600")
    migrate(env)
    made = manage(
        [
            "shell",
            "-c",
            "from progress import start_task, report_progress;"
            "from django.contrib.sessions.backends.db import SessionStore;"
            "ids = [start_task('queued') for _ in range(2)];"
            "[report_progress(i, 'complete', 100) for i in ids];"
            "old = SessionStore(); old['x'] = 1; old.set_expiry(-5); old.save();"
            "new = SessionStore(); new['x'] = 1; new.save();"
            "print('MADE', ' '.join(ids), old.session_key, new.session_key)",
        ],
        env,
    )
    line = next(x for x in made.splitlines() if x.startswith("MADE "))
    old_task, young_task, _, live_session = line.split()[1:]
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        db.execute(
            "update progress_task set updated_at = datetime('now', '-2 hours') where task_id = ?", (old_task,)
        )
    manage(["housekeeping"], env)
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        tasks = {r[0] for r in db.execute("select task_id from progress_task")}
        sessions = {r[0] for r in db.execute("select session_key from django_session")}
    assert tasks == {young_task}
    assert sessions == {live_session}
    assert rows_naming(tmp_path, old_task) == 0
