"""The per-process sender: reports handed over from threads leave in order, in batches, none lost."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

from progress import delivery, loops, report_progress, sender, store
from tests.conftest import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


async def _subscribe(task_id: str) -> str:
    layer = get_channel_layer()
    assert layer is not None
    channel: str = await layer.new_channel()
    await layer.group_add(store.group_name(task_id), channel)
    return channel


async def _receive_until(channel: str, seq: int) -> list[dict[str, Any]]:
    """The task's events up to ``seq`` (a waiting task's place-in-line messages are passed over)."""
    layer = get_channel_layer()
    assert layer is not None
    got: list[dict[str, Any]] = []
    while not got or got[-1]["seq"] < seq:
        message = await asyncio.wait_for(layer.receive(channel), 10)
        if message["type"] != "task.queue":
            got.append(message)
    return got


def _report_in_thread(task_id: str, count: int) -> None:
    def work() -> None:
        for i in range(1, count + 1):
            report_progress(task_id, "transcribing", min(i, 100), f"step {i}")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def _own_sender() -> sender.Sender:
    loop = loops.own_loop()
    assert loop is not None
    found = sender.sender.get(loop)
    assert found is not None
    return found


async def test_sender_thread_reports_arrive_in_order_in_batches(
    pubsub_layer: RedisServer, fast_progress: Any
):
    channel = await _subscribe("job1")
    await asyncio.to_thread(report_progress, "job1", "queued", 0)
    await _receive_until(channel, 1)
    await asyncio.to_thread(_report_in_thread, "job1", 300)
    got = await _receive_until(channel, 301)
    assert [m["seq"] for m in got] == list(range(2, 302))
    assert [m["prev_seq"] for m in got] == list(range(1, 301))
    assert await asyncio.to_thread(delivery.wait_until_sent, 10)
    # One wake-up and one Redis round trip carried several reports.
    assert _own_sender().batches <= 150


async def test_sender_without_linger_sends_everything(
    pubsub_layer: RedisServer, fast_progress: Any, settings: Any
):
    settings.PROGRESS = {**settings.PROGRESS, "PUBLISH_LINGER": 0}
    channel = await _subscribe("job1")
    await asyncio.to_thread(_report_in_thread, "job1", 50)
    got = await _receive_until(channel, 50)
    assert [m["seq"] for m in got] == list(range(1, 51))


async def test_sender_coalesced_then_sent_reports_are_not_stranded(pubsub_layer: RedisServer, settings: Any):
    # A coalesced report hands over only a flush; the loop must still wake for the next send.
    # A 1 s window, so the 0.05 s pauses below stay inside it on a loaded machine.
    settings.PROGRESS = {**settings.PROGRESS, "MAX_UPDATES_PER_SECOND": 1}
    channel = await _subscribe("job1")

    def work() -> None:
        report_progress("job1", "transcribing", 10)
        time.sleep(0.05)  # the sender has sent it and sleeps
        report_progress("job1", "transcribing", 20)  # coalesced: only a flush is handed over
        time.sleep(0.05)
        report_progress("job1", "aligning", 0)  # a stage change is sent at once

    await asyncio.to_thread(work)
    got = await _receive_until(channel, 3)
    assert [m["seq"] for m in got] == [1, 3]
    assert got[-1]["prev_seq"] == 1
    assert '"stage":"aligning"' in got[-1]["text"]
    assert await asyncio.to_thread(delivery.wait_until_sent, 10)


async def test_sender_lone_report_does_not_linger(
    pubsub_layer: RedisServer, fast_progress: Any, settings: Any
):
    # A task reporting now and then is not held back waiting for company (10 s wait vs a 60 s linger).
    settings.PROGRESS = {**settings.PROGRESS, "PUBLISH_LINGER": 60}
    channel = await _subscribe("job1")
    # Not "queued": that is followed by the task's place in line, a second message within the linger.
    await asyncio.to_thread(report_progress, "job1", "transcribing", 0)
    got = await _receive_until(channel, 1)
    assert [m["seq"] for m in got] == [1]
    # Nothing lingers past the test, where a 60 s sleep would hold the next test's reports.
    assert await asyncio.to_thread(delivery.wait_until_sent, 10)


class SwallowingLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """A layer whose send swallows cancellation, as RedisChannelLayer was seen to do at shutdown."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)


async def test_sender_cancelled_while_a_layer_swallows_it_still_ends(settings: Any):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.system.test_sender.SwallowingLayer"}}
    channel_layers.backends = {}
    own = sender.Sender(asyncio.get_running_loop())
    own.put(
        {
            "type": "task.event",
            "task_id": "job1",
            "seq": 1,
            "prev_seq": 0,
            "final": False,
            "text": "{}",
            "at": 0.0,
        }
    )
    await asyncio.sleep(0.05)  # the sender is inside group_send
    assert own.task is not None
    own.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(own.task, 5)
