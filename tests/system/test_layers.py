"""PubSubChannelLayer against real redis-servers: groups, one decode per message, sinks, hosts, failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.exceptions
from channels.layers import InMemoryChannelLayer

from progress.extensions import has_extension
from progress.layers import RESUMED, PubSubChannelLayer, decode_hosts, shard_index
from tests.conftest import RedisServer, free_port

pytestmark = pytest.mark.redis


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[PubSubChannelLayer]:
    layer = PubSubChannelLayer(hosts=[{"address": redis_server.url, "socket_connect_timeout": 2}])
    yield layer
    await layer.flush()


def subscribers(server: RedisServer, name: str) -> int:
    """How many Redis connections subscribe to ``name``."""
    with redis.Redis.from_url(server.url) as client:
        return int(dict(client.pubsub_numsub(name))[name.encode()])


async def until(condition: Any, timeout: float = 5) -> None:
    """Wait until ``condition()`` is true (Redis handles SUBSCRIBE after the call that sent it returns)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def member(layer: PubSubChannelLayer, server: RedisServer, *groups: str) -> str:
    """A new channel in ``groups``, once Redis has the subscriptions."""
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
        await until(lambda g=group: subscribers(server, f"asgi__group__{g}") == 1)
    await until(lambda: subscribers(server, channel) == 1)
    return channel


async def test_group_send_decoded_once_for_all_members(layer, redis_server):
    a = await member(layer, redis_server, "g")
    b = await member(layer, redis_server, "g")
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    got_a = await asyncio.wait_for(layer.receive(a), 5)
    got_b = await asyncio.wait_for(layer.receive(b), 5)
    assert got_a == {"type": "task.event", "seq": 1}
    assert got_a is got_b


async def test_group_send_order_of_many(layer, redis_server):
    a = await member(layer, redis_server, "g")
    b = await member(layer, redis_server, "g")
    for seq in range(500):
        await layer.group_send("g", {"type": "task.event", "seq": seq})
    for channel in (a, b):
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["seq"] for _ in range(500)]
        assert got == list(range(500))


async def test_send_direct_channel_arrives(layer, redis_server):
    a = await member(layer, redis_server)
    await layer.send(a, {"type": "hello", "n": 1})
    assert await asyncio.wait_for(layer.receive(a), 5) == {"type": "hello", "n": 1}


async def test_deliver_to_sink_gets_messages(layer, redis_server):
    a = await member(layer, redis_server, "g")
    got: list[dict[str, Any]] = []
    layer.deliver_to(a, got.append)
    for seq in range(3):
        await layer.group_send("g", {"type": "task.event", "seq": seq})
    await until(lambda: len(got) == 3)
    assert [m["seq"] for m in got] == [0, 1, 2]


async def test_deliver_to_queued_before_sink_first_in_order(layer, redis_server):
    a = await member(layer, redis_server, "g")
    for seq in range(3):
        await layer.group_send("g", {"type": "task.event", "seq": seq})
    inbox = layer.state().channels[a]
    await until(lambda: len(inbox.messages or ()) == 3)
    got: list[dict[str, Any]] = []
    layer.deliver_to(a, got.append)
    assert [m["seq"] for m in got] == [0, 1, 2]  # at once, before anything newer
    await layer.group_send("g", {"type": "task.event", "seq": 3})
    await until(lambda: len(got) == 4)
    assert [m["seq"] for m in got] == [0, 1, 2, 3]


async def test_deliver_to_none_queues_again(layer, redis_server):
    a = await member(layer, redis_server, "g")
    got: list[dict[str, Any]] = []
    layer.deliver_to(a, got.append)
    layer.deliver_to(a, None)
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    assert (await asyncio.wait_for(layer.receive(a), 5))["seq"] == 1
    assert got == []


async def test_deliver_to_unknown_channel_raises(layer):
    with pytest.raises(RuntimeError, match="new_channel"):
        layer.deliver_to("asgispecific.nope", print)


async def test_deliver_to_raising_sink_does_not_stop_other_channels(layer, redis_server, caplog):
    a = await member(layer, redis_server, "g")
    b = await member(layer, redis_server, "g")
    got: list[dict[str, Any]] = []

    def broken(message: dict[str, Any]) -> None:
        raise ValueError("sink broke")

    layer.deliver_to(a, broken)
    layer.deliver_to(b, got.append)
    with caplog.at_level(logging.ERROR, logger="progress.layers"):
        for seq in range(2):
            await layer.group_send("g", {"type": "task.event", "seq": seq})
        await until(lambda: len(got) == 2)
    assert [m["seq"] for m in got] == [0, 1]
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError, ValueError]


async def test_receive_cancelled_unsubscribes(layer, redis_server):
    a = await member(layer, redis_server)
    receiving = asyncio.create_task(layer.receive(a))
    await asyncio.sleep(0.05)
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert a not in layer.state().channels
    await until(lambda: subscribers(redis_server, a) == 0)


async def test_receive_two_at_once_raises(layer, redis_server):
    a = await member(layer, redis_server)
    first = asyncio.create_task(layer.receive(a))
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError, match="two coroutines"):
        await layer.receive(a)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_discard_channel_unsubscribes_and_drops_sink(layer, redis_server):
    a = await member(layer, redis_server, "g")
    b = await member(layer, redis_server, "g")
    got_a: list[dict[str, Any]] = []
    got_b: list[dict[str, Any]] = []
    layer.deliver_to(a, got_a.append)
    layer.deliver_to(b, got_b.append)
    await layer.discard_channel(a)
    await until(lambda: subscribers(redis_server, a) == 0)
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    await until(lambda: len(got_b) == 1)
    assert got_a == []
    with pytest.raises(RuntimeError):
        layer.deliver_to(a, got_a.append)


async def test_discard_channel_unknown_is_noop(layer):
    await layer.discard_channel("asgispecific.nope")
    assert layer.state().channels == {}


async def test_group_send_many_order_across_groups(layer, redis_server):
    one = await member(layer, redis_server, "g1")
    both = await member(layer, redis_server, "g1", "g2")
    sent = [(f"g{1 + i % 2}", {"type": "task.event", "seq": i}) for i in range(50)]
    await layer.group_send_many(sent)
    got_both = [(await asyncio.wait_for(layer.receive(both), 5))["seq"] for _ in range(50)]
    got_one = [(await asyncio.wait_for(layer.receive(one), 5))["seq"] for _ in range(25)]
    assert got_both == list(range(50))
    assert got_one == list(range(0, 50, 2))


async def test_group_send_many_empty_sends_nothing(layer, redis_server):
    a = await member(layer, redis_server, "g")
    await layer.group_send_many([])
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    assert (await asyncio.wait_for(layer.receive(a), 5))["seq"] == 1


async def test_group_send_redis_down_raises(layer, redis_server):
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    await asyncio.to_thread(redis_server.stop)
    with pytest.raises(redis.exceptions.ConnectionError):
        await asyncio.wait_for(layer.group_send("g", {"type": "task.event", "seq": 2}), 30)


async def test_group_send_many_redis_down_raises(layer, redis_server):
    await layer.group_send_many([("g", {"type": "task.event", "seq": 1})])
    await asyncio.to_thread(redis_server.stop)
    with pytest.raises(redis.exceptions.ConnectionError):
        await asyncio.wait_for(layer.group_send_many([("g", {"type": "task.event", "seq": 2})]), 30)


async def test_receiver_survives_redis_restart(layer, redis_server):
    a = await member(layer, redis_server, "g")
    got: list[dict[str, Any]] = []
    layer.deliver_to(a, got.append)
    await asyncio.to_thread(redis_server.stop)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(redis_server.start)
    # redis-py subscribes again when its pub/sub connection comes back.
    await until(lambda: subscribers(redis_server, "asgi__group__g") == 1, timeout=20)
    while len(got) < 2:
        # The publishing connection in the pool may be the old server's.
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await layer.group_send("g", {"type": "task.event", "seq": 1})
        await asyncio.sleep(0.1)
    assert got[0]["type"] == RESUMED  # once subscribed again, before anything published after
    assert got[1] == {"type": "task.event", "seq": 1}


def test_hot_api_is_bound_on_the_class():
    for name in ("new_channel", "receive", "send", "group_add", "group_discard", "group_send", "flush"):
        assert name in vars(PubSubChannelLayer), name


async def test_two_loops_share_one_layer_object(layer, redis_server):
    a = await member(layer, redis_server, "g")

    async def from_other_loop() -> None:
        await layer.group_send("g", {"type": "task.event", "seq": 1})
        await layer.flush()

    await asyncio.to_thread(asyncio.run, from_other_loop())
    assert (await asyncio.wait_for(layer.receive(a), 5))["seq"] == 1


async def test_new_channel_redis_unreachable_leaves_no_inbox():
    nowhere = PubSubChannelLayer(
        hosts=[{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 2}]
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        await asyncio.wait_for(nowhere.new_channel(), 30)
    assert nowhere.state().channels == {}


def test_extensions_declared():
    layer = PubSubChannelLayer()
    for name in ("groups", "flush", "deliver_to", "discard_channel", "group_send_many"):
        assert has_extension(layer, name), name


def test_has_extension_plain_layer_has_none_of_ours():
    plain = InMemoryChannelLayer()
    assert has_extension(plain, "groups")
    assert not has_extension(plain, "deliver_to")
    assert not has_extension(object(), "groups")


def test_decode_hosts_forms():
    assert decode_hosts(None) == [{"address": "redis://localhost:6379"}]
    assert decode_hosts(["redis://a:1/0", ("b", 2), {"address": "redis://c", "db": 1}]) == [
        {"address": "redis://a:1/0"},
        {"host": "b", "port": 2},
        {"address": "redis://c", "db": 1},
    ]
    with pytest.raises(ValueError, match="list"):
        decode_hosts("redis://a")


def test_shard_index_spreads_and_is_stable():
    spread = {shard_index(f"asgi__group__g{i}", 2) for i in range(12)}
    assert spread == {0, 1}
    assert shard_index("anything", 1) == 0
    assert shard_index("asgi__group__g1", 4) == shard_index("asgi__group__g1", 4)


async def test_several_hosts_each_group_on_one_host(redis_server, second_redis_server):
    servers = [redis_server, second_redis_server]
    layer = PubSubChannelLayer(hosts=[s.url for s in servers])
    try:
        channel = await layer.new_channel()
        groups = [f"g{i}" for i in range(12)]
        for group in groups:
            await layer.group_add(group, channel)
        for group in groups:
            name = f"asgi__group__{group}"
            await until(lambda n=name: sum(subscribers(s, n) for s in servers) == 1)
            assert subscribers(servers[shard_index(name, 2)], name) == 1
        await layer.group_send_many([(g, {"type": "n", "group": g}) for g in groups])
        got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in groups]
        assert sorted(m["group"] for m in got) == sorted(groups)
        # In order per host; across hosts, as they arrive.
        for index in (0, 1):
            on_host = [g for g in groups if shard_index(f"asgi__group__{g}", 2) == index]
            assert [m["group"] for m in got if m["group"] in on_host] == on_host
    finally:
        await layer.flush()


async def test_flush_forgets_everything_and_works_again(layer, redis_server):
    a = await member(layer, redis_server, "g")
    await layer.flush()
    assert layer.state().channels == {}
    assert layer.state().groups == {}
    await until(lambda: subscribers(redis_server, a) == 0)
    await until(lambda: subscribers(redis_server, "asgi__group__g") == 0)
    b = await member(layer, redis_server, "g")
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    assert (await asyncio.wait_for(layer.receive(b), 5))["seq"] == 1


async def test_group_discard_last_member_unsubscribes(layer, redis_server):
    a = await member(layer, redis_server, "g")
    b = await member(layer, redis_server, "g")
    await layer.group_discard("g", a)
    assert subscribers(redis_server, "asgi__group__g") == 1
    await layer.group_discard("g", b)
    await until(lambda: subscribers(redis_server, "asgi__group__g") == 0)
    await layer.group_discard("g", b)  # again: nothing


async def test_group_add_foreign_channel_raises(layer):
    with pytest.raises(RuntimeError, match="new_channel"):
        await layer.group_add("g", "asgispecific.elsewhere")


async def test_restart_calls_hooks_once_each(redis_server):
    events: list[str] = []
    layer = PubSubChannelLayer(
        hosts=[{"address": redis_server.url, "socket_connect_timeout": 2}],
        on_disconnect=lambda: events.append("down"),
        on_reconnect=lambda: events.append("up"),
    )
    try:
        await member(layer, redis_server, "g")
        await asyncio.to_thread(redis_server.stop)
        await until(lambda: events == ["down"], timeout=10)
        await asyncio.to_thread(redis_server.start)
        await until(lambda: events == ["down", "up"], timeout=20)
    finally:
        await layer.flush()


async def test_restart_tells_every_sink_it_resumed(redis_server):
    layer = PubSubChannelLayer(hosts=[{"address": redis_server.url, "socket_connect_timeout": 2}])
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    try:
        a = await member(layer, redis_server, "g")
        b = await member(layer, redis_server)
        layer.deliver_to(a, got["a"].append)
        layer.deliver_to(b, got["b"].append)
        plain = await member(layer, redis_server, "g")  # no sink: its receive() sees no notice
        await asyncio.to_thread(redis_server.stop)
        down_at = asyncio.get_running_loop().time()
        await asyncio.to_thread(redis_server.start)
        await until(lambda: got["a"] and got["b"], timeout=20)
        for messages in got.values():
            (notice,) = messages
            assert notice["type"] == RESUMED
            assert notice["at"] > down_at
        await until(lambda: subscribers(redis_server, "asgi__group__g") == 1, timeout=10)
        await layer.group_send("g", {"type": "task.event", "seq": 1})
        assert await asyncio.wait_for(layer.receive(plain), 5) == {"type": "task.event", "seq": 1}
    finally:
        await layer.flush()


def test_loop_close_closes_the_loops_connections(redis_server):
    layer = PubSubChannelLayer(hosts=[redis_server.url])

    async def use() -> str:
        channel = await layer.new_channel()
        await until(lambda: subscribers(redis_server, channel) == 1)
        return channel

    channel = asyncio.run(use())  # closes its loop: the layer's state for it goes first
    assert len(layer.loops) == 0
    with redis.Redis.from_url(redis_server.url) as client:
        assert int(dict(client.pubsub_numsub(channel))[channel.encode()]) == 0


def command_calls(server: RedisServer, command: str) -> int:
    """How many times Redis ran ``command`` (INFO commandstats)."""
    with redis.Redis.from_url(server.url) as client:
        stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_subscribes_of_one_moment_share_a_command(layer, redis_server):
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(200)))
    assert len(set(channels)) == 200
    assert command_calls(redis_server, "subscribe") <= 3
    await until(lambda: all(subscribers(redis_server, c) == 1 for c in channels[::20]))


async def test_unsubscribes_batched_and_applied(layer, redis_server):
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(200)))
    for channel in channels:
        await layer.group_add("g", channel)
    await until(lambda: subscribers(redis_server, "asgi__group__g") == 1)
    for channel in channels:
        await layer.group_discard("g", channel)
        await layer.discard_channel(channel)
    await until(lambda: subscribers(redis_server, "asgi__group__g") == 0)
    await until(lambda: all(subscribers(redis_server, c) == 0 for c in channels[::20]))
    assert command_calls(redis_server, "unsubscribe") <= 3


async def test_resubscribe_before_the_batch_keeps_the_subscription(layer, redis_server):
    a = await member(layer, redis_server, "g")
    await layer.group_discard("g", a)
    await layer.group_add("g", a)  # in the same loop turn: the batch sees no change
    await asyncio.sleep(0.1)
    assert subscribers(redis_server, "asgi__group__g") == 1
    await layer.group_send("g", {"type": "task.event", "seq": 1})
    assert (await asyncio.wait_for(layer.receive(a), 5))["seq"] == 1
