"""progress.layers against a stock channels-redis RedisPubSubChannelLayer in another process, both ways."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from channels_redis.pubsub import RedisPubSubChannelLayer

from progress import areport_progress
from progress.layers import PubSubChannelLayer, shard_index
from progress.schemas import ProgressMessage, SnapshotMessage, parse_server_message
from tests.conftest import RedisServer, receive, watching

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def stock(command: str, hosts: list[RedisServer], group: str, argument: str) -> subprocess.Popen[str]:
    """``tests/stock_layer.py`` in a new process (channels-redis' own layer, nothing of ours loaded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stock_layer", command, ",".join(h.url for h in hosts), group, argument],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@contextmanager
def stock_listener(hosts: list[RedisServer], group: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """A stock layer in another process, subscribed to ``group`` and waiting for ``count`` messages."""
    process = stock("listen", hosts, group, str(count))
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def use_layer(settings: Any, hosts: list[RedisServer]) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "progress.layers.PubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": h.url, "socket_timeout": 30} for h in hosts]},
        }
    }
    channel_layers.backends = {}


def test_serialize_same_bytes_as_channels_redis():
    message = {"type": "task.event", "seq": 3, "text": "é", "at": 1.5, "final": False}
    assert PubSubChannelLayer().serialize(message) == RedisPubSubChannelLayer().serialize(message)


def test_serialize_json_format_same_bytes_as_channels_redis():
    message = {"type": "task.event", "seq": 3}
    ours = PubSubChannelLayer(serializer_format="json")
    theirs = RedisPubSubChannelLayer(serializer_format="json")
    assert ours.serialize(message) == theirs.serialize(message)


@pytest.mark.django_db(transaction=True)
async def test_stock_group_send_reaches_our_consumer(redis_server, settings):
    use_layer(settings, [redis_server])
    await areport_progress("job1", "queued", 0)
    async with watching("/ws/tasks/job1/") as client:
        snapshot = await receive(client)
        assert isinstance(snapshot, SnapshotMessage)
        frame = ProgressMessage(
            task_id="job1",
            seq=snapshot.seq + 1,
            stage="transcribing",
            percentage=40,
            timestamp=snapshot.timestamp,
        )
        event = {
            "type": "task.event",
            "task_id": "job1",
            "seq": frame.seq,
            "prev_seq": snapshot.seq,
            "final": False,
            "text": frame.model_dump_json(),
            "at": 0.0,
        }
        sent = stock("send", [redis_server], "task.job1", json.dumps(event))
        assert await asyncio.to_thread(sent.wait, 30) == 0
        got = await receive(client, timeout=10)
        assert isinstance(got, ProgressMessage)
        assert (got.seq, got.stage, got.percentage) == (snapshot.seq + 1, "transcribing", 40)


@pytest.mark.django_db(transaction=True)
async def test_our_sender_reaches_stock_layer(redis_server, settings):
    use_layer(settings, [redis_server])
    with stock_listener([redis_server], "task.job1", 2) as listener:
        await areport_progress("job1", "uploading", 0)  # not waiting in line: no queue message between
        await areport_progress("job1", "transcribing", 10)
        out, _ = await asyncio.to_thread(listener.communicate, timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["seq"]) for e in events] == [("task.event", 1), ("task.event", 2)]
    last = parse_server_message(events[1]["text"])
    assert isinstance(last, ProgressMessage)
    assert (last.stage, last.percentage) == ("transcribing", 10)


async def test_two_hosts_stock_sends_to_every_group_we_joined(redis_server, second_redis_server):
    hosts = [redis_server, second_redis_server]
    layer = PubSubChannelLayer(hosts=[h.url for h in hosts])
    groups = [f"g{i}" for i in range(12)]
    assert {shard_index(f"asgi__group__{g}", 2) for g in groups} == {0, 1}
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    await asyncio.sleep(0.2)  # Redis applies SUBSCRIBE after the call that sent it returns
    try:
        for group in groups:
            sent = stock("send", hosts, group, json.dumps({"type": "hello", "group": group}))
            assert await asyncio.to_thread(sent.wait, 30) == 0
        got = [await asyncio.wait_for(layer.receive(channel), 10) for _ in groups]
        assert [m["group"] for m in got] == groups
    finally:
        await layer.flush()


async def test_two_hosts_stock_receives_what_we_send_many(redis_server, second_redis_server):
    hosts = [redis_server, second_redis_server]
    layer = PubSubChannelLayer(hosts=[h.url for h in hosts])
    assert shard_index("asgi__group__g8", 2) == 1  # the second host
    try:
        with stock_listener(hosts, "g8", 3) as listener:
            await layer.group_send_many([("g8", {"type": "n", "n": n}) for n in range(3)])
            out, _ = await asyncio.to_thread(listener.communicate, timeout=30)
    finally:
        await layer.flush()
    assert [json.loads(line)["n"] for line in out.splitlines()] == [0, 1, 2]
