"""The publishing API: argument checks, loop rules, a broken layer, the in-memory warning, worker threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from channels.layers import channel_layers

from progress import (
    areport_error,
    areport_progress,
    arestart_task,
    delivery,
    loops,
    report_error,
    report_progress,
    restart_task,
)
from progress.models import Task
from progress.schemas import ProgressMessage, SnapshotMessage
from tests.conftest import RedisServer, free_port, receive, watching

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("job1", "sleeping", 10), "stage"),
        (("job1", "queued", 101), "percentage"),
        (("job1", "queued", -1), "percentage"),
        (("job1", "queued", True), "percentage"),
        (("job1", "queued", "x"), "percentage"),
        (("job1", "queued", None), "percentage"),
        (("job1", "queued", float("inf")), "percentage"),
        (("job1", "queued", float("nan")), "percentage"),
        (("bad id", "queued", 0), "task_id"),
        (("", "queued", 0), "task_id"),
        (("x" * 65, "queued", 0), "task_id"),
    ],
)
def test_publish_report_progress_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        report_progress(*args)
    assert not Task.objects.exists()


def test_publish_report_progress_rounds_float_percentage():
    assert report_progress("job1", "transcribing", 41.6)
    assert Task.objects.get(pk="job1").percentage == 42


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("job1", "Bad Code", "failed"), "error_code"),
        (("job1", "", "failed"), "error_code"),
        (("job1", "decode_failed", ""), "user_message"),
        (("bad/id", "decode_failed", "failed"), "task_id"),
    ],
)
def test_publish_report_error_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        report_error(*args)
    assert not Task.objects.exists()


async def test_publish_async_twins_validate_too():
    with pytest.raises(ValueError, match="percentage"):
        await areport_progress("job1", "queued", 101)
    with pytest.raises(ValueError, match="error_code"):
        await areport_error("job1", "Bad Code", "failed")


@pytest.mark.parametrize(
    ("call", "twin"),
    [
        (lambda: report_progress("job1", "queued", 0), "areport_progress"),
        (lambda: report_error("job1", "oops", "failed"), "areport_error"),
        (lambda: restart_task("job1"), "arestart_task"),
    ],
)
async def test_publish_sync_call_in_running_loop_names_async_twin(call, twin):
    with pytest.raises(RuntimeError, match=twin):
        call()


def test_publish_returns_whether_the_task_changed():
    assert report_progress("job1", "transcribing", 10)
    assert not report_progress("job1", "transcribing", 10)
    assert not report_progress("job1", "queued", 0)
    assert report_error("job1", "oops", "failed")
    assert not report_error("job1", "oops", "failed")


def test_publish_restart_task_returns_the_new_attempt():
    assert restart_task("nobody") is None
    report_progress("job1", "transcribing", 10)
    report_error("job1", "oops", "failed")
    assert restart_task("job1") == 2
    assert restart_task("job1") is None


async def test_publish_arestart_task_reaches_resuming_watcher():
    await areport_progress("job1", "transcribing", 10)
    await areport_error("job1", "oops", "failed")
    # Watchers were closed by the error; one that comes back after the retry resumes into attempt 2.
    assert await arestart_task("job1") == 2
    async with watching("/ws/tasks/job1/?last_seq=2") as client:
        message = await receive(client)
        assert isinstance(message, ProgressMessage)
        assert (message.seq, message.attempt, message.stage) == (3, 2, "queued")


def test_publish_in_memory_outside_server_warns_once(caplog):
    caplog.set_level(logging.WARNING, logger="progress")
    for pct in (1, 2, 3):
        assert report_progress("job1", "transcribing", pct)
    warnings = [r for r in caplog.records if "in-memory" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert Task.objects.get(pk="job1").percentage == 3


def _closed_port_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}]
            },
        }
    }
    channel_layers.backends = {}


def test_publish_broken_layer_from_sync_is_logged_and_stored(settings, caplog):
    _closed_port_layer(settings)
    caplog.set_level(logging.ERROR, logger="progress")
    assert report_progress("job1", "queued", 0)
    assert report_progress("job1", "transcribing", 10)
    assert delivery.wait_until_sent(30)
    assert any("channel layer unavailable" in r.getMessage() for r in caplog.records)
    task = Task.objects.get(pk="job1")
    assert (task.stage, task.percentage, task.seq) == ("transcribing", 10, 2)


async def test_publish_broken_layer_from_async_is_logged_and_stored(settings, caplog):
    _closed_port_layer(settings)
    caplog.set_level(logging.ERROR, logger="progress")
    assert await areport_progress("job1", "queued", 0)
    assert await areport_error("job1", "oops", "failed")
    for _ in range(300):
        if any("channel layer unavailable" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    assert any("channel layer unavailable" in r.getMessage() for r in caplog.records)
    assert await Task.objects.filter(pk="job1", status="failed", seq=2).aexists()


def _run_and_join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.redis
async def test_publish_thread_without_server_loop_reaches_watcher(redis_layer: RedisServer, caplog):
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        assert isinstance(await receive(client), SnapshotMessage)
        # The communicator's consumer binds this test's loop as the server loop; a Celery worker has none.
        loops.unbind_server_loop()
        worker = threading.Thread(target=report_progress, args=("job1", "transcribing", 42, "from a worker"))
        await asyncio.to_thread(_run_and_join, worker)
        message = await receive(client, timeout=10)
        assert isinstance(message, ProgressMessage)
        assert (message.seq, message.percentage, message.message) == (2, 42, "from a worker")
    assert loops.own_loop() is not None
    assert loops.alive(loops.own_loop())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.redis
async def test_publish_many_thread_reports_never_close_the_loop(redis_layer: RedisServer, caplog):
    threads, per_thread = 8, 40
    for t in range(threads):
        await areport_progress(f"job{t}", "queued", 0)
    async with watching("/ws/tasks/job0/") as client:
        await receive(client)
        loops.unbind_server_loop()
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(1, per_thread + 1):
                    report_progress(f"job{t}", "transcribing", i, f"step {i}")
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]

        await asyncio.to_thread(_run_and_join, *workers)
        seen: list[int] = []
        while not seen or seen[-1] < per_thread:
            message = await receive(client, timeout=10)
            assert isinstance(message, ProgressMessage)
            seen.append(message.percentage)
        assert seen == sorted(seen)
    assert errors == []
    assert await asyncio.to_thread(delivery.wait_until_sent, 10)
    text = caplog.text
    assert "Event loop is closed" not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    counts = [t.percentage async for t in Task.objects.filter(status="running")]
    assert counts == [per_thread] * threads
