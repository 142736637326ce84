"""Issue 3's guarantee: late joiners, resume, completion, coalescing, regressions, concurrent reporters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from progress import areport_progress, loops, report_progress
from progress.models import Task, TaskEvent
from progress.schemas import ErrorMessage, HeartbeatMessage, ProgressMessage, SnapshotMessage
from tests.conftest import RedisServer, quiet, receive, watching
from tests.processes import ROOT, project_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]

STAGES = ["queued", "transcribing", "aligning", "diarizing"]


async def _events(task_id: str) -> list[tuple[int, str]]:
    return [
        (seq, payload)
        async for seq, payload in TaskEvent.objects.filter(task_id=task_id).values_list("seq", "payload")
    ]


async def _until_seq(
    client: WebsocketCommunicator, seq: int, timeout: float = 10
) -> list[ProgressMessage | ErrorMessage]:
    """Receive progress/error frames until one carries ``seq``."""
    got: list[ProgressMessage | ErrorMessage] = []
    while not got or got[-1].seq < seq:
        message = await receive(client, timeout)
        assert isinstance(message, ProgressMessage | ErrorMessage), message
        got.append(message)
    return got


async def test_delivery_late_joiner_gets_snapshot_then_every_later_message():
    for stage in STAGES[:3]:
        await areport_progress("job1", stage, 5)
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        assert (snapshot.seq, [h.stage for h in snapshot.history]) == (3, STAGES[:3])
        later = [("aligning", 40), ("aligning", 80), ("diarizing", 0), ("diarizing", 50), ("complete", 100)]
        for stage, pct in later:
            await areport_progress("job1", stage, pct)
        got = await _until_seq(client, 8)
        assert [(m.seq, m.stage, m.percentage) for m in got if isinstance(m, ProgressMessage)] == [
            (4 + i, stage, pct) for i, (stage, pct) in enumerate(later)
        ]
        assert (await client.receive_output(3))["code"] == 1000


@pytest.mark.parametrize("resume_from", [0, 1, 2, 3, 4, 5, 6])
async def test_delivery_resume_gets_exactly_what_came_after(resume_from):
    reports = [
        ("queued", 0),
        ("transcribing", 10),
        ("transcribing", 20),
        ("aligning", 0),
        ("aligning", 30),
        ("aligning", 60),
    ]
    for stage, pct in reports:
        await areport_progress("job1", stage, pct)
    events = dict(await _events("job1"))
    async with watching(f"/ws/tasks/job1/?last_seq={resume_from}") as client:
        got = await _until_seq(client, 6) if resume_from < 6 else []
        seqs = [m.seq for m in got]
        # Every stage change after N, then the latest progress; nothing at or before N, nothing twice.
        expected = sorted({s for s in events if s > resume_from} | ({6} if resume_from < 6 else set()))
        assert seqs == expected
        for message in got:
            if message.seq in events:
                assert message.model_dump_json() == events[message.seq]
        await areport_progress("job1", "diarizing", 1)
        live = await receive(client)
        assert isinstance(live, ProgressMessage)
        assert live.seq == 7
        assert await quiet(client, 0.2)


async def test_delivery_connect_after_completion_gets_terminal_and_close():
    await areport_progress("job1", "transcribing", 50)
    await areport_progress("job1", "complete", 100)
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        terminal = await receive(client)
        assert isinstance(terminal, ProgressMessage)
        assert (terminal.seq, terminal.stage) == (2, "complete")
        assert await client.receive_output(3) == {"type": "websocket.close", "code": 1000}


async def test_delivery_resume_after_failure_gets_error_and_stays_open():
    await areport_progress("job1", "transcribing", 50)
    from progress import areport_error

    await areport_error("job1", "decode_failed", "We could not read the audio.")
    async with watching("/ws/tasks/job1/?last_seq=1") as client:
        terminal = await receive(client)
        assert isinstance(terminal, ErrorMessage)
        assert terminal.seq == 2
        assert await quiet(client, 0.2)  # open: a retry would follow


async def test_delivery_burst_is_coalesced_with_final_value(settings):
    rate = 20
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": rate, "HEARTBEAT_INTERVAL": 3600}
    await areport_progress("job1", "transcribing", 0, "step 0")
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        started = time.monotonic()
        for i in range(1, 1001):
            await areport_progress("job1", "transcribing", i // 10, f"step {i}")
        got = await _until_seq(client, 1001)
        elapsed = time.monotonic() - started
        assert await quiet(client, 0.3)
    seqs = [m.seq for m in got]
    assert seqs == sorted(set(seqs))
    assert len(got) <= elapsed * rate + 2
    assert len(got) < 1000
    final = got[-1]
    assert isinstance(final, ProgressMessage)
    assert (final.seq, final.percentage, final.message) == (1001, 100, "step 1000")


async def test_delivery_regressing_report_not_broadcast():
    await areport_progress("job1", "aligning", 50)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        assert not await areport_progress("job1", "aligning", 49)
        assert not await areport_progress("job1", "transcribing", 99)
        assert not await areport_progress("job1", "aligning", 50)
        assert await quiet(client, 0.3)
        assert await areport_progress("job1", "aligning", 51)
        message = await receive(client)
        assert isinstance(message, ProgressMessage)
        assert (message.seq, message.percentage) == (2, 51)


async def test_delivery_heartbeat_recovers_a_message_never_fanned_out(settings):
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": 0, "HEARTBEAT_INTERVAL": 0.2}
    await areport_progress("job1", "transcribing", 10)
    async with watching("/ws/tasks/job1/") as client:
        await receive(client)
        # As from a process whose layer cannot reach this server: stored, never sent live.
        loops.unbind_server_loop()
        assert await asyncio.to_thread(report_progress, "job1", "aligning", 5)
        message = await receive(client)
        while isinstance(message, HeartbeatMessage):
            message = await receive(client)
        assert isinstance(message, ProgressMessage)
        assert (message.seq, message.stage, message.percentage) == (2, "aligning", 5)


def _plan(worker: int) -> list[tuple[str, int]]:
    """One reporter's reports: every stage, in order, with percentages that interleave with others'."""
    return [(stage, pct) for stage in STAGES for pct in range(worker, 100, 7)]


async def _check_rows_and_client(
    task_id: str, got: list[ProgressMessage | ErrorMessage], baseline: int
) -> None:
    task = await Task.objects.aget(pk=task_id)
    events = await _events(task_id)
    event_seqs = [seq for seq, _ in events]
    assert event_seqs == sorted(set(event_seqs))
    assert [json.loads(p)["stage"] for _, p in events] == [*STAGES, "complete"]
    assert event_seqs[-1] == task.seq
    seqs = [m.seq for m in got]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == task.seq
    assert {s for s in event_seqs if s > baseline} <= set(seqs)


async def test_delivery_concurrent_threads_keep_seqs_unique_and_ordered():
    await areport_progress("shared", "queued", 0)
    async with watching("/ws/tasks/shared/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        accepted: list[bool] = []

        def work(worker: int) -> None:
            for stage, pct in _plan(worker):
                accepted.append(report_progress("shared", stage, pct, f"w{worker}"))

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]

        def run() -> None:
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        await asyncio.to_thread(run)
        await areport_progress("shared", "complete", 100)
        task = await Task.objects.aget(pk="shared")
        assert task.seq == 1 + sum(accepted) + 1
        got = await _until_seq(client, task.seq)
    await _check_rows_and_client("shared", got, snapshot.seq)


_REPORTER = """
import sys, django
django.setup()
from progress.publish import report_progress, wait_until_sent
worker, plan = int(sys.argv[1]), __import__("json").loads(sys.argv[2])
accepted = sum(report_progress("shared", stage, pct, f"p{worker}") for stage, pct in plan)
assert wait_until_sent(30)
print(accepted)
"""


def _run_reporters(env: dict[str, str], count: int) -> list[tuple[int, str, str]]:
    """Run ``count`` reporter processes at once; each one's exit code, stdout and stderr."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _REPORTER, str(w), json.dumps(_plan(w))],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(count)
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


@pytest.mark.redis
@pytest.mark.parametrize("rate", ["0", "20"])
async def test_delivery_concurrent_processes_keep_seqs_unique_and_ordered(
    redis_layer: RedisServer, tmp_path: Path, rate: str
):
    db_name = django_settings.DATABASES["default"]["NAME"]
    env = project_env(
        tmp_path,
        DATABASE_URL=f"sqlite:///{db_name}",
        REDIS_URL=redis_layer.url,
        PROGRESS_MAX_UPDATES_PER_SECOND=rate,
    )
    await areport_progress("shared", "queued", 0)
    async with watching("/ws/tasks/shared/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        results = await asyncio.to_thread(_run_reporters, env, 4)
        assert [code for code, _, _ in results] == [0] * 4, [err for _, _, err in results]
        accepted = sum(int(out.split()[-1]) for _, out, _ in results)
        await areport_progress("shared", "complete", 100)
        task = await Task.objects.aget(pk="shared")
        assert task.seq == 1 + accepted + 1
        got = await _until_seq(client, task.seq)
    await _check_rows_and_client("shared", got, snapshot.seq)
