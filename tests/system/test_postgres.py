"""The durable store on PostgreSQL: migrations, concurrent writers from several processes, the
create race, stale and final reports, the same snapshots and catch-ups as on SQLite, and the
scaled stack (two daphne servers, a Celery worker, Redis) running a job on it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.e2e_client import Http, Watcher, celery_worker
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text
from tests.postgres import PostgresServer
from tests.processes import PYTHON, ROOT, daphne, manage, migrate, project_env, stop
from tests.store_worker import scripted

pytestmark = pytest.mark.postgres

ACCEPTED = ("broadcast", "coalesce")


class Database:
    """One migrated database of the test cluster and the environment of processes using it."""

    def __init__(self, server: PostgresServer, name: str, env: dict[str, str]) -> None:
        self.server = server
        self.name = name
        self.env = env

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one SQL query, read straight from PostgreSQL."""
        with self.server.connect(self.name) as conn:
            return list(conn.execute(sql, params).fetchall())

    def worker(self, *args: str) -> subprocess.Popen[str]:
        """``python -m tests.store_worker ARGS`` against this database."""
        return subprocess.Popen(
            [PYTHON, "-m", "tests.store_worker", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def result(process: subprocess.Popen[str]) -> Any:
    """What a worker printed, once it has ended (its errors if it failed)."""
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def database(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Database:
    """A fresh database migrated by ``manage.py migrate`` in a child process with DATABASE_URL."""
    # A name of its own each time: pytest-django runs this module's non-transactional test first,
    # apart from the rest, so the fixture is set up twice in one session.
    name = f"progress_store_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    env = project_env(tmp_path_factory.mktemp("pg-data"), DATABASE_URL=url)
    migrate(env)
    return Database(postgres_server, name, env)


@pytest.fixture(scope="module")
def pg_scripted(database: Database) -> Any:
    """The scripted sequence run on PostgreSQL by a child process."""
    return result(database.worker("script", "scripted"))


def reap(processes: list[subprocess.Popen[str]]) -> None:
    """Kill whichever of these workers a failed test left running."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def start_together(database: Database, task_id: str, workers: int, count: int, go: Path) -> list[Any]:
    """Start ``workers`` reporting processes, release them at once when all are connected; their outcomes."""
    processes = [database.worker("report", task_id, str(count), str(go), str(w)) for w in range(workers)]
    try:
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.{w}.ready").exists() for w in range(workers)):
            assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
            assert time.monotonic() < deadline, "workers never got ready"
            time.sleep(0.01)
        go.touch()
        return [result(p) for p in processes]
    finally:
        reap(processes)


def test_postgres_migrations_create_schema(database: Database) -> None:
    tables = {row[0] for row in database.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    constraints = {row[0] for row in database.query("SELECT conname FROM pg_constraint")}
    assert {"progress_task", "progress_taskevent", "django_migrations"} <= tables
    assert "progress_event_unique_seq" in constraints
    assert database.query("SELECT count(*) FROM django_migrations WHERE app = 'progress'")[0][0] >= 1
    manage(["migrate", "--check"], database.env)  # raises when a migration is still unapplied


def test_postgres_concurrent_reports_keep_one_order(database: Database, tmp_path: Path) -> None:
    workers, count = 4, 100
    runs = start_together(database, "crowd", workers, count, tmp_path / "go")
    outcomes = [o for run in runs for o in run]
    accepted = sorted((o for o in outcomes if o["verdict"] in ACCEPTED), key=lambda o: o["seq"])
    seq, status, percentage = database.query(
        "SELECT seq, status, percentage FROM progress_task WHERE task_id = 'crowd'"
    )[0]
    assert [o["seq"] for o in accepted] == list(range(1, seq + 1))
    assert all(o["prev_seq"] == o["seq"] - 1 for o in accepted)  # every accepted report was fanned out
    assert {o["verdict"] for o in outcomes} <= {*ACCEPTED, "stale", "repeat", "final"}
    for run in runs:
        seqs = [o["seq"] for o in run]
        assert seqs == sorted(seqs)
        assert len({o["seq"] for o in run if o["verdict"] in ACCEPTED}) == len(
            [o for o in run if o["verdict"] in ACCEPTED]
        )
    completions = [o for o in accepted if o["stage"] == "complete"]
    assert len(completions) == 1
    assert completions[0]["seq"] == seq
    assert completions[0]["final"] is True
    assert (status, percentage) == ("complete", 100)
    for run in runs:  # after the completion, every report of every worker is refused as final
        verdicts = [o["verdict"] for o in run]
        ended = verdicts.index("final") if "final" in verdicts else len(run)
        assert set(verdicts[ended:]) <= {"final"}
        assert all(o["seq"] == seq for o in run[ended:])
    assert sum(o["verdict"] == "final" for o in outcomes) >= workers - 1
    events = database.query(
        "SELECT seq, stage, payload FROM progress_taskevent WHERE task_id = 'crowd' ORDER BY id"
    )
    changes = [
        o
        for o, before in zip(accepted, [None, *accepted[:-1]], strict=True)
        if o["stage"] != (before or {}).get("stage")
    ]
    assert [(e[0], e[1]) for e in events] == [(o["seq"], o["stage"]) for o in changes]
    assert all(a[0] < b[0] for a, b in pairwise(events))
    assert all(json.loads(e[2])["seq"] == e[0] for e in events)


def test_postgres_first_report_waits_for_a_racing_create(
    database: Database, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # Another writer has inserted the task but not committed: the worker sees no row, its insert
    # waits on the primary key, fails once that commits, and the savepoint lets it carry on.
    held = postgres_server.connect(database.name)
    held.autocommit = False
    held.execute(
        "INSERT INTO progress_task (task_id, status, stage, percentage, seq, attempt, broadcast_seq,"
        " created_at, updated_at) VALUES ('raced', 'running', 'queued', 0, 0, 1, 0, now(), now())"
    )
    (tmp_path / "go").touch()
    worker = database.worker("report", "raced", "1", str(tmp_path / "go"), "0")
    try:
        deadline = time.monotonic() + 120
        while not database.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO \"progress_task\"%%'",
            database.name,
        ):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker never waited on the insert"
            time.sleep(0.01)
        held.commit()
        [outcome] = result(worker)
    finally:
        held.close()
        reap([worker])
    assert (outcome["verdict"], outcome["seq"], outcome["prev_seq"]) == ("broadcast", 1, 0)
    assert database.query("SELECT seq, stage FROM progress_task WHERE task_id = 'raced'") == [
        (1, "transcribing")
    ]
    assert database.query("SELECT seq FROM progress_taskevent WHERE task_id = 'raced'") == [(1,)]
    assert "Key (task_id)=(raced) already exists" in postgres_server.log()


def test_postgres_stale_and_final_reports_are_ignored(pg_scripted: Any) -> None:
    verdicts = {s["step"]: s["outcome"] for s in pg_scripted["steps"]}
    assert verdicts["lower percentage"]["verdict"] == "stale"
    assert verdicts["lower stage"]["verdict"] == "stale"
    assert verdicts["old attempt"]["verdict"] == "stale"
    assert verdicts["repeat"]["verdict"] == "repeat"
    for late in ("after error", "second error", "after complete", "error after complete"):
        assert (verdicts[late]["verdict"], verdicts[late]["send"]) == ("final", None)
    assert verdicts["restart after complete"] is None
    assert verdicts["flush after complete"] is None
    last = pg_scripted["steps"][-1]["snapshot"]
    assert (last["status"], last["stage"], last["percentage"], last["attempt"]) == (
        "complete",
        "complete",
        100,
        2,
    )
    assert last["seq"] == verdicts["complete"]["seq"]


def test_postgres_scripted_matches_sqlite(pg_scripted: Any, db: None) -> None:
    on_sqlite = json.loads(json.dumps(scripted("scripted")))
    assert [s["step"] for s in on_sqlite["steps"]] == [s["step"] for s in pg_scripted["steps"]]
    for here, there in zip(on_sqlite["steps"], pg_scripted["steps"], strict=True):
        assert here == there
    assert on_sqlite["unknown"] == pg_scripted["unknown"] == [None]


async def watch_until_final(watchers: list[Watcher]) -> None:
    """Run every watcher until its task ends."""
    await asyncio.wait_for(asyncio.gather(*(w.run() for w in watchers)), 120)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.redis
def test_postgres_scaled_stack_runs_a_job(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("progress_stack")
    env = project_env(tmp_path, DATABASE_URL=url, REDIS_URL=redis_server.url, PROGRESS_HEARTBEAT_INTERVAL="1")
    migrate(env)
    speech = make_speech_wav(tmp_path / "speech")
    with ExitStack() as stack:
        servers = [stack.enter_context(daphne(env, tmp_path / f"daphne{n}.log")) for n in (1, 2)]
        client = Http(servers[0])
        status, body = client.upload(speech.name, speech.read_bytes())
        assert status == 201, body
        task_id = body["task_id"]
        watchers = [Watcher(server, task_id) for server in servers]
        stack.callback(stop, celery_worker(env, tmp_path / "worker.log"))
        asyncio.run(watch_until_final(watchers))
        status, transcript = client.call("GET", f"/api/tasks/{task_id}/result")
    stages = ["uploading", "queued", "transcribing", "aligning", "diarizing", "complete"]
    assert all(w.stages() == stages and w.final.stage == "complete" for w in watchers)
    assert status == 200, transcript
    assert fraction_recognised(spoken_text(speech), transcript["text"]) >= 0.6
    rows = postgres_server.connect("progress_stack").execute(
        "SELECT status, seq FROM progress_task WHERE task_id = %s", (task_id,)
    )
    assert rows.fetchall() == [("complete", max(w.last_seq for w in watchers))]
