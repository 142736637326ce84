"""A Redis pub/sub channel layer built on public APIs only: Channels' BaseChannelLayer and redis-py.

On the wire it is channels-redis' ``RedisPubSubChannelLayer``: the same channel and group names, the
same serializers (``channels_redis.serializers``), the same hashing of names over ``hosts``; a stock
layer in another process sends to this one's consumers and receives from its senders. In the process
it differs, and says so in ``extensions``:

- ``deliver_to``: a channel's messages go straight to a callback as they arrive, no queue per socket;
  after a lost Redis connection reads again, each callback gets ``RESUMED``: messages may be lost;
- ``discard_channel``: a channel ends when its consumer does, without a cancelled ``receive``;
- ``group_send_many``: messages for many groups leave in one pipeline per host;
- a message for a group is deserialized once, and every member gets the same dict (read only).

Callers look these up with ``has_extension()`` and fall back to the plain API on any other layer.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import types
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from channels.layers import BaseChannelLayer
from channels_redis.serializers import registry
from redis import asyncio as aioredis

logger = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]

RESUMED = "layer.resumed"
"""The type of the message every ``deliver_to`` sink of a loop gets when its lost pub/sub connection
reads again (a Redis restart or a Sentinel failover), with ``at``, the loop's time then: what was
published meanwhile never arrived, so look it up with a read begun at ``at`` or later."""

# A read that waits this long for a message returns, so redis-py can send its health-check PING.
_READ_TIMEOUT = 1.0
# After a failed read, how long the reader waits before redis-py reconnects and subscribes again.
_RETRY_AFTER = 0.5


def shard_index(name: str, count: int) -> int:
    """Which of ``count`` hosts carries a channel or group name: channels-redis' CRC32 ring."""
    if count == 1:
        return 0
    return int((binascii.crc32(name.encode()) & 0xFFF) / (4096 / count))


def decode_hosts(hosts: Any) -> list[dict[str, Any]]:
    """The ``hosts`` option as channels-redis reads it: URLs, (host, port) pairs or option dicts."""
    if not hosts:
        return [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError("hosts must be a list of Redis hosts, even if there is only one")
    decoded: list[dict[str, Any]] = []
    for entry in hosts:
        if isinstance(entry, dict):
            decoded.append(dict(entry))
        elif isinstance(entry, (tuple, list)):
            decoded.append({"host": entry[0], "port": entry[1]})
        else:
            decoded.append({"address": entry})
    return decoded


def connect(host: dict[str, Any]) -> aioredis.Redis:
    """A redis-py client for one ``hosts`` entry (a URL in "address", a sentinel, or Redis() options)."""
    options = dict(host)
    if "address" in options:
        return aioredis.Redis.from_url(options.pop("address"), **options)
    master = options.pop("master_name", None)
    if master is not None:
        sentinel = aioredis.Sentinel(  # type: ignore[no-untyped-call]
            options.pop("sentinels"), sentinel_kwargs=options.pop("sentinel_kwargs", None)
        )
        client: aioredis.Redis = sentinel.master_for(master, **options)
        return client
    return aioredis.Redis(**options)


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


class _Shard:
    """One Redis host on one event loop: a client that publishes, and a pub/sub connection read by a task.

    Subscriptions are batched: callers change the set of names wanted, and one task at a time sends
    what differs from what Redis was told, as one UNSUBSCRIBE and one SUBSCRIBE of many names. One
    command per name, each awaited under a lock, took a loop turn each, so a restart closing thousands
    of sockets spent seconds unsubscribing (docs/performance.md has the figures).
    """

    def __init__(self, host: dict[str, Any], loop_state: _LoopState) -> None:
        self.client = connect(host)
        self.pubsub = self.client.pubsub()
        self.loop_state = loop_state
        self.wanted: set[str] = set()
        self.sent: set[str] = set()
        """What Redis was told to subscribe this connection to (redis-py renews it on reconnect)."""
        self.waiting: list[asyncio.Future[None]] = []
        self.sync: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def publish_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """PUBLISH each (channel, data) pair in order: one command, or one pipeline."""
        if len(pairs) == 1:
            await self.client.publish(*pairs[0])
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, data in pairs:
                pipe.publish(channel, data)
            await pipe.execute()

    async def subscribe(self, name: str) -> None:
        """Subscribe to a name: returns once the SUBSCRIBE carrying it is sent (raises if it failed)."""
        self.wanted.add(name)
        if name in self.sent:
            return
        done = asyncio.get_running_loop().create_future()
        self.waiting.append(done)
        self._start_sync()
        try:
            await done
        except BaseException:
            self.wanted.discard(name)  # nobody learns of a name that failed to subscribe
            raise

    def unsubscribe(self, name: str) -> None:
        """Unsubscribe from a name, in the next batch (a failure is logged: the connection is gone)."""
        self.wanted.discard(name)
        if name in self.sent:
            self._start_sync()

    def _start_sync(self) -> None:
        if self.sync is None or self.sync.done():
            self.sync = asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        """Send Redis the difference between wanted and sent, until there is none."""
        while True:
            await asyncio.sleep(0)  # the callers of this loop turn join the batch
            waiting, self.waiting = self.waiting, []
            gone, new = self.sent - self.wanted, self.wanted - self.sent
            try:
                if gone:
                    self.sent -= gone
                    await self.pubsub.unsubscribe(*gone)
                if new:
                    await self.pubsub.subscribe(*new)
                    self.sent |= new
                    if self.reader is None or self.reader.done():
                        self.reader = asyncio.create_task(
                            self.read(), name=f"progress.layers reader {id(self)}"
                        )
            except Exception as exc:
                if gone and not waiting:
                    logger.warning("Could not unsubscribe %d names: %r", len(gone), exc)
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                return
            for future in waiting:
                if not future.done():
                    future.set_result(None)
            if not self.waiting and self.sent == self.wanted:
                return

    async def read(self) -> None:
        """Hand every published message to the loop's channels, across Redis failures and restarts."""
        failed = False
        deliver = self.loop_state.deliver
        while True:
            try:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=_READ_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # redis-py reconnects on the next read and subscribes to every name again.
                if not failed:
                    logger.warning("Redis pub/sub connection lost, reconnecting: %r", exc)
                    self.loop_state.layer.disconnected()
                failed = True
                await asyncio.sleep(_RETRY_AFTER)
                continue
            if failed:
                failed = False
                logger.warning("Redis pub/sub connection back")
                self.loop_state.resumed()
                self.loop_state.layer.reconnected()
            if message is not None and message["type"] == "message":
                deliver(message["channel"], message["data"])

    async def close(self) -> None:
        """Stop reading and close both connections; the shard can be used again afterwards."""
        for task in (self.sync, self.reader):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.sync = self.reader = None
        for future in self.waiting:
            future.cancel()
        self.waiting = []
        self.wanted, self.sent = set(), set()
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()
        self.pubsub = self.client.pubsub()


class _LoopState:
    """What the layer holds on one event loop: channel -> inbox, group -> members, one shard per host."""

    def __init__(self, layer: PubSubChannelLayer) -> None:
        self.layer = layer
        self.channels: dict[str, _Inbox] = {}
        self.groups: dict[str, set[str]] = {}
        self.shards = [_Shard(host, self) for host in layer.hosts]

    def shard(self, name: str) -> _Shard:
        """The shard that carries a channel or group name."""
        return self.shards[shard_index(name, len(self.shards))]

    def deliver(self, name: bytes | str, data: bytes) -> None:
        """Decode a published message once and put it in the inbox of its channel or of every member."""
        if isinstance(name, bytes):
            name = name.decode()
        inbox = self.channels.get(name)
        if inbox is not None:
            targets = [inbox]
        else:
            members = self.groups.get(name)
            if not members:
                return
            channels = self.channels
            # A list first: a sink may make the group change while it runs.
            targets = [channels[c] for c in members if c in channels]
        try:
            decoded = self.layer.deserialize(data)
        except Exception:
            logger.exception("Undecodable message on %s dropped", name)
            return
        for target in targets:
            target.put(decoded)  # the same dict for every member: consumers only read it

    def resumed(self) -> None:
        """Tell every sink that messages may have been lost while a connection was down."""
        message = {"type": RESUMED, "at": asyncio.get_running_loop().time()}
        for inbox in list(self.channels.values()):
            if inbox.sink is not None:
                inbox.put(message)

    async def close(self) -> None:
        """Forget every channel and group and close the connections."""
        self.channels = {}
        self.groups = {}
        for shard in self.shards:
            await shard.close()


class PubSubChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """Channels layer over Redis PUBLISH/SUBSCRIBE: at most once, in order per sender, nothing stored."""

    extensions = ["groups", "flush", "deliver_to", "discard_channel", "group_send_many"]

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        serializer_format: str = "msgpack",
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        on_disconnect: Callable[[], Any] | None = None,
        on_reconnect: Callable[[], Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.hosts = decode_hosts(hosts)
        self.prefix = prefix
        self.serializer = registry.get_serializer(
            serializer_format, symmetric_encryption_keys=symmetric_encryption_keys
        )
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def serialize(self, message: dict[str, Any]) -> bytes:
        """A message as the bytes channels-redis publishes."""
        data: bytes = self.serializer.serialize(message)
        return data

    def deserialize(self, data: bytes) -> dict[str, Any]:
        """A message from the bytes channels-redis publishes."""
        message: dict[str, Any] = self.serializer.deserialize(data)
        return message

    def group_channel(self, group: str) -> str:
        """The Redis channel a group's messages are published on (channels-redis' name)."""
        return f"{self.prefix}__group__{group}"

    def state(self) -> _LoopState:
        """This event loop's channels, groups and connections, made on first use."""
        loop = asyncio.get_running_loop()
        state = self.loops.get(loop)
        if state is None:
            state = self.loops[loop] = _LoopState(self)
            self._close_with(loop)
        return state

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the loop's connections when the loop closes (asyncio.run, async_to_sync), not after."""
        close = loop.close

        def close_first(running: asyncio.AbstractEventLoop) -> None:
            state = self.loops.pop(running, None)
            if state is not None and not running.is_closed() and not running.is_running():
                running.run_until_complete(state.close())
            close()

        # A loop class without instance attributes keeps its connections until the process ends.
        with contextlib.suppress(AttributeError):
            loop.close = types.MethodType(close_first, loop)  # type: ignore[method-assign]

    def disconnected(self) -> None:
        """Hook: a pub/sub connection failed (calls ``on_disconnect``)."""
        if self.on_disconnect is not None:
            self.on_disconnect()

    def reconnected(self) -> None:
        """Hook: a failed pub/sub connection reads again (calls ``on_reconnect``)."""
        if self.on_reconnect is not None:
            self.on_reconnect()

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel for a consumer of this process, subscribed before it is returned."""
        state = self.state()
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        inbox = state.channels[channel] = _Inbox()
        try:
            await state.shard(channel).subscribe(channel)
        except BaseException:
            # Nobody learns the name of a channel that failed to subscribe: nobody would discard it.
            if state.channels.get(channel) is inbox:
                del state.channels[channel]
            raise
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        """The channel's next message (shared with the other members of its group: read only).

        Cancelled, it ends the channel, as channels-redis does: Channels cancels it when the consumer ends.
        """
        state = self.state()
        inbox = state.channels.get(channel)
        if inbox is None:
            inbox = state.channels[channel] = _Inbox()
            await state.shard(channel).subscribe(channel)
        try:
            return await inbox.get()
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            if state.channels.get(channel) is inbox:
                try:
                    await self.discard_channel(channel)
                except Exception:  # the cancellation is what the caller must see
                    logger.exception("Could not unsubscribe an ended channel")
            raise

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send a message to one channel."""
        await self.state().shard(channel).publish_many([(channel, self.serialize(message))])

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel of this process to a group."""
        state = self.state()
        if channel not in state.channels:
            raise RuntimeError(f"group_add() needs a channel made by new_channel() on this loop: {channel!r}")
        name = self.group_channel(group)
        state.groups.setdefault(name, set()).add(channel)
        await state.shard(name).subscribe(name)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group (nothing if it is not a member)."""
        state = self.state()
        name = self.group_channel(group)
        members = state.groups.get(name)
        if members is None or channel not in members:
            return
        members.discard(channel)
        if not members:
            del state.groups[name]
            state.shard(name).unsubscribe(name)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send a message to every member of a group, in every process."""
        name = self.group_channel(group)
        await self.state().shard(name).publish_many([(name, self.serialize(message))])

    async def group_send_many(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Send (group, message) pairs in order, one pipeline of PUBLISH per host."""
        state = self.state()
        by_shard: dict[int, tuple[_Shard, list[tuple[str, bytes]]]] = {}
        for group, message in messages:
            name = self.group_channel(group)
            shard = state.shard(name)
            by_shard.setdefault(id(shard), (shard, []))[1].append((name, self.serialize(message)))
        await asyncio.gather(*(shard.publish_many(batch) for shard, batch in by_shard.values()))

    def deliver_to(self, channel: str, sink: Sink | None) -> None:
        """Hand the channel's messages to ``sink`` as they arrive (queued ones first); None queues again."""
        inbox = self.state().channels.get(channel)
        if inbox is None:
            raise RuntimeError(
                f"deliver_to() needs a channel made by new_channel() on this loop: {channel!r}"
            )
        inbox.sink = sink
        inbox.drain_to_sink()

    async def discard_channel(self, channel: str) -> None:
        """End a channel made by new_channel: drop its inbox and sink, and unsubscribe it (batched)."""
        state = self.state()
        inbox = state.channels.pop(channel, None)
        if inbox is None:
            return
        inbox.sink = None
        state.shard(channel).unsubscribe(channel)

    async def flush(self) -> None:
        """Forget every channel and group of this loop and close its connections (reopened on use)."""
        await self.state().close()
