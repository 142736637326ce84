"""The WebSocket end: one consumer per watcher, fed by its task's channel-layer group.

Only the I/O lives here: access, the group, reads, timers, sending and closing. What to send and
when to close is decided by the socket's ``Watcher`` (progress.watcher).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.consumer import get_handler_name

from . import collect, metrics, shutdown, store
from .access import may_watch, query_param
from .conf import get_settings
from .heartbeat import TICK, Heartbeat
from .inbox import ClientGone, InboxConsumer
from .limits import FrameBucket, client_address, open_sockets
from .logs import SocketLog
from .loops import bind_server_loop
from .schemas import HeartbeatMessage
from .snapshots import Views, views
from .watcher import (
    CATCH_UP,
    CLOSE_LAYER_DOWN,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_TOO_SLOW,
    SEND,
    SEND_AND_CLOSE,
    Close,
    Effect,
    Read,
    Watcher,
)

log = logging.getLogger("progress")


class TaskProgressConsumer(InboxConsumer):
    """Streams one task's progress to one watcher, in seq order, with no gaps or repeats."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_id = ""
        self.client = ""
        self.log = SocketLog("", "")
        settings = get_settings()
        frames = FrameBucket(asyncio.get_running_loop().time())
        self.watcher = Watcher(frames, settings.MAX_FRAME_BYTES, settings.MAX_PROTOCOL_ERRORS)
        self.heartbeat: Heartbeat | None = None
        self.views: Views = views()
        # What cleanup undoes: the task's group joined, the address's slot counted, the kept view watched.
        self.group: str | None = None
        self.counted = False
        self.watching = False
        self.connected_at: float | None = None
        self.close_code: int | None = None

    async def connect(self) -> None:
        """Check the client may watch, join the task's group, then send what the watcher has not seen."""
        bind_server_loop()
        self.task_id = self.scope["url_route"]["kwargs"]["task_id"]
        self.client = client_address(self.scope)
        self.log = SocketLog(self.task_id, self.client)
        if not open_sockets.acquire(self.client):
            await self._end(Close(CLOSE_TOO_MANY_SOCKETS, "holds too many sockets"), accept=True)
            return
        self.counted = True
        if not await may_watch(self.task_id, self.scope, query_param(self.scope, "token")):
            self.log.refused(CLOSE_NOT_FOUND)
            await self._end(Close(CLOSE_NOT_FOUND), accept=True)
            return
        if self.layer_down is not None:  # the socket has no channel: nothing to join or leave
            await self._layer_unavailable(self.layer_down)
            return
        if shutdown.draining():  # this process is stopping: go to another at once
            await self.accept()
            await self.server_restart({})
            return
        shutdown.track(self)
        self.connected_at = time.monotonic()
        metrics.CONNECTIONS.inc()
        self.log.connected()
        # Joining before reading the state means nothing published in between is lost;
        # what arrives twice is dropped by seq in task_event().
        try:
            await self.channel_layer.group_add(store.group_name(self.task_id), self.channel_name)
        except Exception as exc:
            await self._layer_unavailable(exc)
            return
        self.group = store.group_name(self.task_id)
        if self.pushed:
            # Kept views need every message of the task seen by the process as it arrives, before a
            # later consumer can read one: only a pushing layer gives that. Others read per socket.
            self.views.watch(self.task_id)
            self.watching = True
        await self.accept()
        await self._do(self.watcher.begin(query_param(self.scope, "last_seq")))
        await self._catch_up(Read.KEPT)
        if not self.watcher.finished:
            self.heartbeat = Heartbeat(self.inbox, self.task_id)
            self.heartbeat.start(asyncio.get_running_loop().time())

    async def _layer_unavailable(self, exc: Exception) -> None:
        metrics.LAYER_ERRORS.inc()
        log.warning("progress: channel layer unavailable, watcher of %s sent away: %r", self.task_id, exc)
        await self._end(Close(CLOSE_LAYER_DOWN), accept=True)

    async def layer_failed(self, message: dict[str, Any]) -> None:
        """Live delivery is broken: close with 4503, and the client resumes with ?last_seq."""
        metrics.LAYER_ERRORS.inc()
        await self._end(Close(CLOSE_LAYER_DOWN))

    async def _catch_up(self, read: Read) -> None:
        """Read the task's view as the watcher asks, and send what it says. The process's kept view
        serves where the layer pushes (progress.snapshots); otherwise each socket reads its own."""
        fresh = read is Read.FRESH or not self.pushed
        view = await (self.views.fresh(self.task_id) if fresh else self.views.get(self.task_id))
        if not fresh and self.watcher.wants_fresher(view):
            view = await self.views.fresh(self.task_id)  # the kept view may be behind the database
        await self._do(self.watcher.view_read(view))

    async def _do(self, effects: list[Effect]) -> None:
        """Send the watcher's frames, and make its close."""
        for effect in effects:
            if isinstance(effect, str):
                await self.send(text_data=effect)
            else:
                await self._closed_by_watcher(effect)

    async def _closed_by_watcher(self, close: Close) -> None:
        if close.why is not None:
            self.log.limited(close.why, close.code)
        self.close_code = close.code
        self._stop_heartbeat()
        await self.close(close.code)

    async def _end(self, close: Close, accept: bool = False) -> None:
        """End the watch from outside the watcher's rules (refused, deleted, the layer failed)."""
        if accept:
            await self.accept()
        await self._do(self.watcher.finish(close.code, close.why))

    def _pushed(self, message: dict[str, Any]) -> None:
        # On arrival, not at dispatch: a socket joining meanwhile must not be sent an older view.
        if message.get("type") in ("task.event", "task.deleted", "task.queue"):
            self.views.seen(self.task_id, message["seq"])  # a kept view's place in line is old too
        super()._pushed(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route every message to its handler, as Channels does, without its aclose_old_connections():
        a hop to Django's one shared worker per message. No handler here touches the database on the
        loop; their reads run in worker threads that close stale connections themselves."""
        kind = message["type"]
        if kind == "task.event":
            await self.task_event(message)
        elif kind == TICK["type"]:
            await self.heartbeat_tick(message)
        else:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {kind}")
            await handler(message)

    async def task_event(self, event: dict[str, Any]) -> None:
        """A message published to the task's group: forward it if it is the next one."""
        action = self.watcher.event(event["seq"], event["prev_seq"], event["final"])
        if action != SEND and action != SEND_AND_CLOSE:
            if action == CATCH_UP:  # the database has what the live path lost
                await self._catch_up(Read.KEPT)
            return
        # The frame is encoded already: straight to the server, past Channels' send wrappers.
        try:
            await self.server_send({"type": "websocket.send", "text": event["text"]})
        except Exception as exc:  # inline rather than base_send's wrapper: this runs per frame
            raise ClientGone(repr(exc)) from exc
        metrics.frame_sent(event)
        if action == SEND_AND_CLOSE:
            # The task's other watchers in this process were woken for the same frame: they send it
            # before any of them spends its turn closing.
            await asyncio.sleep(0)
            await self._closed_by_watcher(Close(CLOSE_NORMAL))

    async def task_queue(self, message: dict[str, Any]) -> None:
        """The task's place in line changed: forward it (it has no seq; a newer one replaces it)."""
        if not self.watcher.finished:
            await self.send(text_data=message["text"])

    async def task_deleted(self, message: dict[str, Any]) -> None:
        """The task was deleted: close as for a task that does not exist."""
        await self._end(Close(CLOSE_NOT_FOUND))

    def loop_ended(self) -> None:
        """The consumer's loop stopped: no more heartbeats."""
        self._stop_heartbeat()

    def _stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    async def heartbeat_tick(self, message: dict[str, Any]) -> None:
        """The heartbeat timer is due: send a heartbeat, and look for anything the live path lost."""
        beat = self.heartbeat
        if beat is None or not beat.running or self.watcher.finished:
            return
        await self.send(text_data=HeartbeatMessage().model_dump_json())
        beat.next()
        beat.check()

    async def layer_resumed(self, message: dict[str, Any]) -> None:
        """The layer's lost connection is back: look now for what it lost, not at the next heartbeat."""
        if self.heartbeat is not None and self.heartbeat.running and not self.watcher.finished:
            self.heartbeat.check(since=message["at"])

    async def heartbeat_checked(self, message: dict[str, Any]) -> None:
        """The task's newest seq, read at a heartbeat: catch up if the live path lost something."""
        decision = self.watcher.checked(message["seq"])
        if isinstance(decision, Close):
            await self._closed_by_watcher(decision)
        elif decision is not None:
            try:
                await self._catch_up(decision)
            except Exception:
                log.exception("progress: could not catch task %s up after a heartbeat", self.task_id)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """A client frame: answered by the watcher's rules, so bad input never closes with 1011."""
        await self._do(self.watcher.frame(asyncio.get_running_loop().time(), text_data))

    def too_slow(self) -> None:
        """More than MAX_QUEUED_BYTES wait for this socket: it is dropped, and may resume by seq."""
        limit = get_settings().MAX_QUEUED_BYTES
        self.log.limited(f"did not take its frames (over {limit} bytes queued)", CLOSE_TOO_SLOW)

    async def server_restart(self, message: dict[str, Any]) -> None:
        """The process is stopping (``restart()``): close with the restart code."""
        code = shutdown.restart_code()
        if not self.watcher.finish(code):
            self.restart_done()
            return
        self.close_code = code
        self._stop_heartbeat()
        try:
            await self.server_send({"type": "websocket.close", "code": code})
        except Exception:  # daphne's autobahn refuses 1012: its private twin says the same
            self.close_code = code = shutdown.PRIVATE_RESTART
            await self.server_send({"type": "websocket.close", "code": code})
        finally:
            self.restart_done()

    async def disconnect(self, code: int) -> None:
        """The client closed (or the connection dropped): remember its code for the close line."""
        if self.close_code is None:
            self.close_code = code

    async def cleanup(self) -> None:
        """The socket is gone, however its loop ended: leave the group, free the address's slot."""
        if self.connected_at is not None:
            self.log.closed(self.close_code, round(time.monotonic() - self.connected_at, 3))
            metrics.CONNECTIONS.dec()
        if self.close_code is not None or self.connected_at is not None:
            metrics.CLOSES.labels(str(self.close_code)).inc()
        self._stop_heartbeat()
        collect.socket_closed()
        if self.counted:
            self.counted = False
            open_sockets.release(self.client)
        if self.watching:
            self.watching = False
            self.views.unwatch(self.task_id)
        if self.group is not None:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as exc:  # the layer forgets the channel on its own (group expiry)
                log.warning("progress: could not leave group %s: %r", self.group, exc)
