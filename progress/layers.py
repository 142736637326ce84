"""The server's channel layer: Redis pub/sub with a group message decoded once per process.

``RedisPubSubChannelLayer`` reached every call through ``__getattr__`` and a ``functools.partial``,
kept an ``asyncio.Queue`` per channel (~1.5 KB per idle socket) and deserialized a group message
once per member socket (~9% of a fan-out's CPU). This keeps its wire format, its per-loop inner
layers and its behaviour when Redis fails, and changes only the in-process part.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close, decode_hosts

logger = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]


class _Inbox:
    """A channel's messages not yet received, or the sink that takes them as they arrive."""

    __slots__ = ("messages", "sink", "waiter")

    def __init__(self) -> None:
        self.messages: deque[dict[str, Any]] | None = None  # made on the first queued message
        self.waiter: asyncio.Future[None] | None = None
        self.sink: Sink | None = None

    def put(self, message: dict[str, Any]) -> None:
        """Hand a message to the sink, or queue it and wake the receiver."""
        sink = self.sink
        if sink is not None:
            try:
                sink(message)
            except Exception:
                logger.exception("A channel's sink raised; its message is dropped")
            return
        if self.messages is None:
            self.messages = deque()
        self.messages.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        """The oldest queued message, waiting for one if there is none."""
        while not self.messages:
            if self.waiter is not None:
                raise RuntimeError("two coroutines receive on one channel at once")
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        return self.messages.popleft()

    def drain_to_sink(self) -> None:
        """Hand what was queued before the sink was set to it, in order."""
        while self.messages and self.sink is not None:
            self.put(self.messages.popleft())


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]
    """One Redis connection: decodes each incoming message once, whatever its number of members."""

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        layer: _LoopLayer = self.channel_layer
        inbox = layer.channels.get(name)
        if inbox is not None:
            targets = [inbox]
        else:
            members = layer.groups.get(name)
            if not members:
                return
            channels = layer.channels
            # A list first: a sink may make the group change while it runs.
            targets = [channels[c] for c in members if c in channels]
        try:
            decoded = layer.channel_layer.deserialize(message["data"])
        except Exception:
            logger.exception("Undecodable message on %s dropped", name)
            return
        for target in targets:
            target.put(decoded)  # the same dict for every member: consumers only read it

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH each (channel, data) pair in order, as one pipeline."""
        async with self._lock:
            self._ensure_redis()
            pipe = self._redis.pipeline(transaction=False)
            for channel, data in messages:
                pipe.publish(channel, data)
            await pipe.execute()


class _LoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    """The layer's state on one event loop: channel name -> inbox, group -> member channels."""

    channels: dict[str, _Inbox]
    groups: dict[str, set[str]]

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts, **kwargs)
        self._shards = [_Shard(host, self) for host in decode_hosts(hosts)]

    async def _subscribe_to_channel(self, channel: str) -> None:
        inbox = self.channels[channel] = _Inbox()
        try:
            await self._get_shard(channel).subscribe(channel)
        except BaseException:
            # Nobody learns the name of a channel that failed to subscribe: nobody would discard it.
            if self.channels.get(channel) is inbox:
                del self.channels[channel]
            raise

    async def receive(self, channel: str) -> dict[str, Any]:
        """The channel's next message; cancelled, it unsubscribes the channel as the base does."""
        inbox = self.channels.get(channel)
        if inbox is None:
            await self._subscribe_to_channel(channel)
            inbox = self.channels[channel]
        try:
            return await inbox.get()
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            # Channels cancels receive when the consumer ends: that is the channel's end.
            if self.channels.get(channel) is inbox:
                del self.channels[channel]
                try:
                    await self._get_shard(channel).unsubscribe(channel)
                except BaseException:
                    logger.exception("Unexpected exception while cleaning-up channel:")
            raise

    def deliver_to(self, channel: str, sink: Sink | None) -> None:
        """Send the channel's messages to ``sink`` (queued ones first), or queue them again."""
        inbox = self.channels.get(channel)
        if inbox is None:
            raise RuntimeError(f"deliver_to() needs a channel made by new_channel() on its loop: {channel!r}")
        inbox.sink = sink
        inbox.drain_to_sink()

    async def discard_channel(self, channel: str) -> None:
        """Drop the channel's inbox and sink, then unsubscribe it (raises if Redis is down)."""
        inbox = self.channels.pop(channel, None)
        if inbox is None:
            return
        inbox.sink = None
        await self._get_shard(channel).unsubscribe(channel)

    async def group_send_many(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """PUBLISH each message to its group, in order, one pipeline per shard."""
        serialize = self.channel_layer.serialize
        by_shard: dict[int, tuple[_Shard, list[tuple[str, bytes]]]] = {}
        for group, message in messages:
            group_channel = self._get_group_channel_name(group)
            shard = self._get_shard(group_channel)
            by_shard.setdefault(id(shard), (shard, []))[1].append((group_channel, serialize(message)))
        await asyncio.gather(*(shard.publish_many(batch) for shard, batch in by_shard.values()))


class PubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """``RedisPubSubChannelLayer`` with direct methods, light inboxes and one decode per process."""

    extensions = ["groups", "flush"]

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer: _LoopLayer | None = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel name for a consumer in this process, subscribed."""
        channel: str = await self._get_layer().new_channel(prefix)
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        """The channel's next message (shared with the other members of its group: read only)."""
        return await self._get_layer().receive(channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message to one channel."""
        await self._get_layer().send(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel of this process to a group."""
        await self._get_layer().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group (nothing if it is not a member)."""
        await self._get_layer().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send a message to every member of a group, in every process."""
        await self._get_layer().group_send(group, message)

    async def flush(self) -> None:
        """Forget every channel and group of this loop and close its connections."""
        await self._get_layer().flush()

    def deliver_to(self, channel: str, sink: Callable[[dict[str, Any]], None] | None) -> None:
        """Hand the channel's messages to ``sink`` on the loop as they arrive, instead of queueing them; None queues again."""  # noqa: E501
        self._get_layer().deliver_to(channel, sink)

    async def discard_channel(self, channel: str) -> None:
        """Forget a channel made by new_channel: drop its inbox and sink, unsubscribe it (the consumer's end)."""  # noqa: E501
        await self._get_layer().discard_channel(channel)

    async def group_send_many(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Send (group, message) pairs in order with one Redis round trip per shard (a pipeline of PUBLISH)."""  # noqa: E501
        await self._get_layer().group_send_many(messages)
