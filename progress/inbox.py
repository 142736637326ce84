"""The consumer's message loop: a small inbox its sources put messages into, and the loop that drains it.

``InboxConsumer.__call__`` replaces what Channels' ``AsyncConsumer.__call__`` does with
``await_many_dispatch``, and nothing else: the handshake, ``dispatch`` and the send helpers are
Channels' own, reached through public attributes only (``scope``, ``channel_layer``,
``channel_name``, ``base_send``, ``dispatch``). Why: ``await_many_dispatch`` made a task and an
``asyncio.wait()`` per message per socket, and each waiting socket kept a reader task per source.
Here the order is the same (one message per source at a time, dispatched in turn), and:

- the client's frames come through ``read_into``, one at a time, so a client cannot queue more;
- a layer that declares ``deliver_to`` (progress.layers) puts the channel's messages straight into
  the inbox, with no reader task; any other layer is read by ``_pull`` as fast as it delivers;
- what waits here past MAX_QUEUED_BYTES means the client is not keeping up: it is dropped (4013) and
  resumes by seq, whatever the layer's own capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from . import shutdown
from .conf import get_settings
from .extensions import has_extension

log = logging.getLogger("progress")

Item = tuple[Any, "asyncio.Future[None] | None"]
"""A message and the future its reader waits on until it is dispatched (None: nobody waits)."""

_READERS_TIMEOUT = 5.0
"""How long a closed socket waits for its readers to end (they are cancelled; a layer may be slow to stop)."""

_COMPACT_AT = 64
"""Dispatched items kept at the list's head before it is shortened (a list's pop(0) is O(n))."""


class Inbox:
    """Messages put but not yet dispatched, oldest first (lighter than an asyncio.Queue per socket)."""

    __slots__ = ("head", "items", "waiter")

    def __init__(self) -> None:
        self.items: list[Item | None] = []
        self.head = 0
        self.waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.items) - self.head

    def put_nowait(self, item: Item) -> None:
        """Add a message and wake the consumer's loop."""
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def put(self, message: Any) -> None:
        """Add a message that nobody waits on (a layer's sink, a timer)."""
        self.put_nowait((message, None))

    def wait(self) -> asyncio.Future[None]:
        """A future done at the next put: the loop awaits it, with no coroutine frame kept per socket."""
        waiter = self.waiter
        if waiter is None or waiter.done():  # done: cancelled with the loop that awaited it
            waiter = self.waiter = asyncio.get_running_loop().create_future()
        return waiter

    def get_nowait(self) -> Item:
        """The oldest message; the inbox must not be empty."""
        items = self.items
        head = self.head
        item = items[head]
        assert item is not None
        if head + 1 == len(items):
            items.clear()
            self.head = 0
        elif head >= _COMPACT_AT and 2 * head >= len(items):
            del items[: head + 1]
            self.head = 0
        else:
            items[head] = None  # the message is not kept alive by the inbox while it is dispatched
            self.head = head + 1
        return item


async def read_into(source: Callable[[], Awaitable[dict[str, Any]]], inbox: Inbox) -> None:
    """Hand a source's messages to the consumer's loop, the next only once the last was dispatched."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            message: Any = await source()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # raised in the consumer's loop, as Channels does
            message = exc
        dispatched: asyncio.Future[None] = loop.create_future()  # made here: none kept while idle
        inbox.put_nowait((message, dispatched))
        await dispatched


class ClientGone(Exception):
    """The server could not send to the client: it disconnected (its disconnect may still be queued)."""


def _size(message: Any) -> int:
    """What a layer message adds to a socket's backlog: its frame's length (task events only)."""
    if isinstance(message, dict) and message.get("type") == "task.event":
        return len(message["text"])
    return 0


class InboxConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A JSON WebSocket consumer whose client, channel and timers all feed one inbox, dispatched in turn."""

    server_send: Any
    pushed: bool
    """Whether the layer pushes this socket's messages (``deliver_to``): they arrive in the process as
    they are published, in one place, rather than when each consumer reads its own channel."""
    """The server's own send, for the hot path; failures raise the server's exception, not ClientGone."""
    inbox: Inbox
    """Every message the consumer dispatches, one at a time: so frames about the task never interleave."""
    layer_down: Exception | None
    """Why the socket got no channel (a pub/sub layer subscribes it at once; Redis was down)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' consumer loop: every source puts its messages into one inbox, dispatched in turn.

        While the process stops, the handshake is refused at once, before any work: told "restart"
        instead, every client came straight back to the stopping process and kept it too busy to
        finish. A refused client backs off and reaches another process (or this one's successor).
        """
        if shutdown.draining():
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close"})
            return
        # Same order as Channels: both sources are read from the start, one message at a time, and
        # dispatched one after another. Channels' await_many_dispatch made a task and an
        # asyncio.wait() per message per socket instead (see docs/performance.md).
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.server_send = send

        self.base_send = self.send_or_gone  # what Channels' send helpers use
        inbox = self.inbox = Inbox()
        pushed = pulled = False
        self.pushed = False
        self.layer_down = None
        if self.channel_layer is not None:
            try:
                self.channel_name = await self.channel_layer.new_channel()
            except Exception as exc:  # a layer that subscribes here (pub/sub) with Redis down
                self.layer_down = exc
        self.queued_bytes = 0
        self.dropped = False
        self.restart_sent: asyncio.Future[None] | None = None
        self.loop_task = asyncio.current_task()
        if self.layer_down is None and self.channel_layer is not None:
            if has_extension(self.channel_layer, "deliver_to") and has_extension(
                self.channel_layer, "discard_channel"
            ):
                # The layer puts the channel's messages straight into the inbox: no reader task,
                # one wake-up per message instead of two. Nothing can arrive before this line.
                self.channel_layer.deliver_to(self.channel_name, self._pushed)
                pushed = self.pushed = True
            else:
                pulled = True
        readers = [asyncio.create_task(read_into(receive, inbox))]
        if pulled:
            readers.append(asyncio.create_task(self._pull()))
        try:
            while True:
                if not inbox:
                    await inbox.wait()
                    continue
                message, dispatched = inbox.get_nowait()
                try:
                    if isinstance(message, BaseException):
                        raise message
                    self.queued_bytes -= _size(message)
                    await self.dispatch(message)
                finally:
                    if dispatched is not None:
                        dispatched.set_result(None)
        except StopConsumer:
            pass
        except ClientGone as gone:
            log.info("progress: a client went away while the server sent to it: %s", gone)
        except asyncio.CancelledError:
            if not self.dropped:
                raise
            # Cancelled by _pushed(): the client stopped taking frames (a send waits on it, or they
            # arrive faster than it takes them).
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(send({"type": "websocket.close", "code": 4013}), 0.5)
        except Exception:
            # A bug, not bad input (that is answered in receive()): one log line, 1011, and the
            # cleanup below still runs, so no dead channel stays in a group.
            log.exception("progress: a consumer failed")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send({"type": "websocket.close", "code": 1011}), 0.5)
        finally:
            self.loop_ended()
            for reader in readers:
                reader.cancel()
            try:
                # Before waiting for the readers: a layer's receive can take a while to give up (a
                # blocking Redis read), and a server may cancel this task meanwhile (daphne does, after
                # its close timeout). The cleanup's own first steps (the address's slot, the kept view)
                # come before its first await, so a cancel cannot skip them.
                await self.cleanup()
                if pushed:
                    await self._discard_channel()
            finally:
                # What refers back to the consumer goes, so closing a socket frees it without waiting
                # for a full garbage collection (which the servers' GC policy makes rare).
                self.loop_task = None
                self.restart_done()
                del self.base_send
                await asyncio.wait(readers, timeout=_READERS_TIMEOUT)

    async def send_or_gone(self, message: dict[str, Any]) -> None:
        """The server's send, where a failure means the client is gone (raised as ClientGone)."""
        try:
            await self.server_send(message)
        except Exception as exc:
            raise ClientGone(repr(exc)) from exc

    async def _pull(self) -> None:
        """Read a layer that cannot push as fast as it delivers: its messages wait in the inbox, where
        MAX_QUEUED_BYTES bounds them. A layer that fails (Redis restarting) becomes one ``layer.failed``
        message, so the socket ends with 4503 and a log line, not a traceback and 1011."""
        receive = self.channel_layer.receive
        while not self.dropped:
            try:
                message = await receive(self.channel_name)
            except Exception as exc:
                log.warning("progress: channel layer failed under a watcher of a task: %r", exc)
                self._pushed({"type": "layer.failed"})
                return
            self._pushed(message)

    def _pushed(self, message: dict[str, Any]) -> None:
        """The layer's sink: into the inbox, unless the client has let MAX_QUEUED_BYTES pile up."""
        if self.dropped:
            return
        self.queued_bytes += _size(message)
        if self.queued_bytes > get_settings().MAX_QUEUED_BYTES:
            self.dropped = True
            self.too_slow()
            if self.loop_task is not None:
                self.loop_task.cancel()
            return
        self.inbox.put(message)

    def restart(self) -> asyncio.Future[None] | None:
        """The process is stopping: ``server.restart`` goes in turn with the socket's other messages, so no
        frame is cut. A future done once the close is on its way (or the socket gone); None if the
        socket's loop no longer runs. Await ``loop_task`` too, so the close is not lost with the process."""
        if self.loop_task is None:
            return None
        if self.restart_sent is None:
            self.restart_sent = asyncio.get_running_loop().create_future()
            self.inbox.put({"type": "server.restart"})
        return self.restart_sent

    def restart_done(self) -> None:
        """The restart close was sent (or the socket ended without it)."""
        if self.restart_sent is not None and not self.restart_sent.done():
            self.restart_sent.set_result(None)

    def too_slow(self) -> None:
        """Hook: the socket is dropped because its client does not take its frames."""

    async def layer_resumed(self, message: dict[str, Any]) -> None:
        """Hook: the pushing layer's lost connection reads again; what was published meanwhile is lost."""

    async def cleanup(self) -> None:
        """Hook: the loop ended (the socket is gone, or the consumer failed); always called once."""

    async def _discard_channel(self) -> None:
        """End the socket's channel in a layer that pushes (a cancelled receive does it for the rest)."""
        try:
            await self.channel_layer.discard_channel(self.channel_name)
        except Exception as exc:  # Redis down: its subscriptions went with the connection
            log.warning("progress: could not forget channel %s: %r", self.channel_name, exc)

    def loop_ended(self) -> None:
        """Hook: the consumer's loop stopped (the socket is gone)."""
