"""The WebSocket end: one consumer per watcher, fed by its task's channel-layer group."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async

from . import collect, metrics, shutdown, store
from .access import may_read, owners_of_scope, token_valid
from .conf import get_settings
from .inbox import ClientGone, Inbox, InboxConsumer
from .limits import FrameBucket, client_address, open_sockets
from .schemas import (
    HeartbeatMessage,
    PongMessage,
    ProtocolErrorCode,
    ProtocolErrorMessage,
)
from .sender import bind_server_loop
from .seqcheck import newest_seq
from .snapshots import View, Views, views
from .timers import TimerWheel, resolution_for, wheel

log = logging.getLogger("progress")

# Private 4xxx codes: daphne (autobahn) lets an application send only 1000 and 3000-4999.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 4008
"""Too many bad frames, or frames faster than CLIENT_FRAMES_PER_SECOND (as 1008, policy violation)."""
CLOSE_TOO_SLOW = 4013
"""The client did not take its frames: more than MAX_QUEUED_BYTES waited for it (as 1013, try again later)."""
CLOSE_TOO_MANY_SOCKETS = 4029
"""The client address holds MAX_CONNECTIONS_PER_CLIENT sockets on this server process (as HTTP 429)."""
CLOSE_NOT_FOUND = 4404
"""No such task, or the watcher may not see it: the two are not told apart."""
CLOSE_LAYER_DOWN = 4503


HEARTBEAT_TICK: dict[str, Any] = {"type": "heartbeat.tick"}
"""Put into a consumer's inbox by the heartbeat wheel, so the heartbeat goes out in turn with the rest."""


def _tick(inbox: Inbox) -> None:
    inbox.put(HEARTBEAT_TICK)


class TaskProgressConsumer(InboxConsumer):
    """Streams one task's progress to one watcher, in seq order, with no gaps or repeats."""

    task_id: str
    group: str
    last_seq: int
    finished: bool
    protocol_errors: int
    beat_due: float
    beat_slot: int | None = None
    """The slot of the process's heartbeat wheel this socket waits in (progress.timers), if any."""
    beat_wheel: TimerWheel[Inbox]
    views: Views
    """This process's kept views of watched tasks (progress.snapshots)."""

    async def layer_failed(self, message: dict[str, Any]) -> None:
        """Live delivery is broken: close with 4503, and the client resumes with ?last_seq."""
        metrics.LAYER_ERRORS.inc()
        await self._finish(CLOSE_LAYER_DOWN)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse the handshake at once while this process stops; otherwise the consumer's loop."""
        if shutdown.draining():
            # Refused at the handshake, before any work: told "restart" instead, every client came
            # straight back to this process while it closed its sockets, and kept it too busy to
            # finish. A refused client backs off and reaches another process (or this one's successor).
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close"})
            return
        await super().__call__(scope, receive, send)

    async def connect(self) -> None:
        """Check the client may watch, join the task's group, then send what the watcher has not seen."""
        self.views = views()
        bind_server_loop()
        self.task_id = self.scope["url_route"]["kwargs"]["task_id"]
        self.last_seq = 0
        self.finished = False
        self.protocol_errors = 0
        self.frames = FrameBucket(asyncio.get_running_loop().time())
        self.client = client_address(self.scope)
        if not open_sockets.acquire(self.client):
            self._limited("holds too many sockets", CLOSE_TOO_MANY_SOCKETS)
            await self.accept()
            await self._finish(CLOSE_TOO_MANY_SOCKETS)
            return
        self.counted = True
        if not await self._may_watch():
            message = "progress: refused a watcher of %s from %s"
            log.info(message, self.task_id, self.client, extra=self._extra(code=CLOSE_NOT_FOUND))
            await self.accept()
            await self._finish(CLOSE_NOT_FOUND)
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
        log.info("progress: watcher of %s connected from %s", self.task_id, self.client, extra=self._extra())
        self.group = store.group_name(self.task_id)
        # Joining before reading the state means nothing published in between is lost;
        # what arrives twice is dropped by seq in task_event().
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
        except Exception as exc:
            await self._layer_unavailable(exc)
            return
        if self.pushed:
            # Kept views need every message of the task seen by the process as it arrives, before a
            # later consumer can read one: only a pushing layer gives that. Others read per socket.
            self.views.watch(self.task_id)
            self.watching = True
        await self.accept()
        resume_from, problem = self._resume_from()
        if problem:
            await self._protocol_error(ProtocolErrorCode.BAD_LAST_SEQ, problem)
        if resume_from is None:
            known = await self._send_snapshot()
        else:
            self.last_seq = resume_from
            known = await self._catch_up()
        if not known:  # deleted since _may_watch() read it
            await self._finish(CLOSE_NOT_FOUND)
            return
        if not self.finished:
            self.beat_due = asyncio.get_running_loop().time()
            self._schedule_heartbeat()

    async def _layer_unavailable(self, exc: Exception) -> None:
        metrics.LAYER_ERRORS.inc()
        log.warning("progress: channel layer unavailable, watcher of %s sent away: %r", self.task_id, exc)
        await self.accept()
        await self._finish(CLOSE_LAYER_DOWN)

    async def _may_watch(self) -> bool:
        """A valid ``?token=`` for this task, or the task's owner's session; refusals look alike."""
        if token_valid(self.task_id, self._query("token")):
            return True
        return bool(await _owned(self.task_id, self.scope))

    def _query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[-1] if values else None

    def _resume_from(self) -> tuple[int | None, str | None]:
        """The ``last_seq`` query parameter (the last seq this watcher saw), or why it is unusable."""
        raw = self._query("last_seq")
        if raw is None:
            return None, None
        if not raw.isdigit() or len(raw) > 18:
            return None, f"last_seq must be a non-negative integer, not {raw[:32]!r}; sent a snapshot"
        return int(raw), None

    async def _send_snapshot(self, view: View | None = None) -> bool:
        """Send the task's snapshot (and its terminal frame if it has ended; then close if it completed)."""
        if view is None:
            view = await self._view()
        if view is None:
            return False
        await self.send(text_data=view.snapshot)
        self.last_seq = view.seq
        if view.ended and view.terminal is not None:
            # A late watcher of a finished task gets the terminal message too.
            await self.send(text_data=view.terminal)
        if view.final:
            await self._finish(CLOSE_NORMAL)
        return True

    async def _catch_up(self, fresh: bool = False) -> bool:
        """Send every stage change and terminal message after last_seq, then the latest progress.

        ``fresh``: read the database, not the process's kept view (the heartbeat found it newer).
        """
        view = await self._view(fresh)
        if not fresh and self.pushed and view is not None and self.last_seq > view.seq:
            view = await self.views.fresh(self.task_id)  # the kept view may be behind the database
        if view is None:
            return False
        if self.last_seq > view.seq:
            # A seq from the future (another server's database, a forged value): start over
            # with a snapshot, which tells the client to forget the seq it had.
            detail = f"last_seq {self.last_seq} is beyond this task's seq {view.seq}; sent a snapshot"
            await self._protocol_error(ProtocolErrorCode.BAD_LAST_SEQ, detail)
            return await self._send_snapshot(view)
        for seq, frame in view.after(self.last_seq):
            if not self.finished:
                await self.send(text_data=frame)
                self.last_seq = seq
        if view.final:
            await self._finish(CLOSE_NORMAL)
        return True

    async def _view(self, fresh: bool = False) -> View | None:
        """The task's view: the process's kept one where the layer pushes, else read for this socket."""
        if fresh or not self.pushed:
            return await self.views.fresh(self.task_id)
        return await self.views.get(self.task_id)

    def _pushed(self, message: dict[str, Any]) -> None:
        # On arrival, not at dispatch: a socket joining meanwhile must not be sent an older view.
        if message.get("type") in ("task.event", "task.deleted", "task.queue"):
            self.views.seen(self.task_id, message["seq"])  # a kept view's place in line is old too
        super()._pushed(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route every message to its handler, as Channels does, without its aclose_old_connections().

        Channels awaits that before every handler: a hop to Django's one thread-sensitive worker per
        message, which capped fan-out and queued every connect and close behind the others. No handler
        here touches the database on the loop: their reads run in worker threads that close stale
        connections themselves (``database_sync_to_async``, ``sender.db_call``).
        """
        kind = message["type"]
        if kind == "task.event":
            await self.task_event(message)
        elif kind == HEARTBEAT_TICK["type"]:
            await self.heartbeat_tick(message)
        elif kind == "heartbeat.checked":
            await self.heartbeat_checked(message)
        else:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {kind}")
            await handler(message)

    async def task_queue(self, message: dict[str, Any]) -> None:
        """The task's place in line changed: forward it (it has no seq; a newer one replaces it)."""
        if not self.finished:
            await self.send(text_data=message["text"])

    async def task_deleted(self, message: dict[str, Any]) -> None:
        """The task was deleted: close as for a task that does not exist."""
        await self._finish(CLOSE_NOT_FOUND)

    async def task_event(self, event: dict[str, Any]) -> None:
        """A message published to the task's group: forward it if it is the next one."""
        if self.finished or event["seq"] <= self.last_seq:
            return
        if event["prev_seq"] <= self.last_seq:
            # The frame is encoded already: straight to the server, past Channels' send wrappers.
            try:
                await self.server_send({"type": "websocket.send", "text": event["text"]})
            except Exception as exc:  # inline rather than base_send's wrapper: this runs per frame
                raise ClientGone(repr(exc)) from exc
            metrics.frame_sent(event)
            self.last_seq = event["seq"]
            if event["final"]:
                await self._finish(CLOSE_NORMAL)
            return
        # Something between was lost (layer overload, a restart): the database has it.
        await self._catch_up()

    def _schedule_heartbeat(self) -> None:
        # On a fixed cadence: a late heartbeat must not push every later one back.
        interval = get_settings().HEARTBEAT_INTERVAL
        self.beat_due += interval
        self.beat_wheel = wheel(_tick, resolution_for(interval))
        self.beat_slot = self.beat_wheel.add(self.beat_due, self.inbox)

    def loop_ended(self) -> None:
        """The consumer's loop stopped: no more heartbeats."""
        self._stop_heartbeat()

    def _stop_heartbeat(self) -> None:
        if self.beat_slot is not None:
            self.beat_wheel.discard(self.beat_slot, self.inbox)
            self.beat_slot = None

    async def heartbeat_tick(self, message: dict[str, Any]) -> None:
        """The heartbeat timer is due: send a heartbeat, and look for anything the live path lost."""
        if self.finished or self.beat_slot is None:
            return
        await self.send(text_data=HeartbeatMessage().model_dump_json())
        self._schedule_heartbeat()
        # The read is shared and may take a while: its answer comes back through the inbox.
        newest_seq(self.task_id).add_done_callback(self._seq_read)

    def _seq_read(self, read: asyncio.Future[int]) -> None:
        if read.cancelled():
            return
        error = read.exception()
        if error is not None:
            log.error("progress: could not check task %s for missed messages", self.task_id, exc_info=error)
            return
        self.inbox.put({"type": "heartbeat.checked", "seq": read.result()})

    async def heartbeat_checked(self, message: dict[str, Any]) -> None:
        """The task's newest seq, read at a heartbeat: catch up if the live path lost something."""
        if not self.finished and message["seq"] < 0:  # deleted, and the live path lost the news
            await self._finish(CLOSE_NOT_FOUND)
            return
        if self.finished or message["seq"] <= self.last_seq:
            return
        try:
            await self._catch_up(fresh=True)
        except Exception:
            log.exception("progress: could not catch task %s up after a heartbeat", self.task_id)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Parse a client frame without ever letting bad input close the socket with 1011."""
        if self.finished:
            return  # closing: what the client still sends is not answered
        if not self.frames.take(asyncio.get_running_loop().time()):
            self._limited("sent frames too fast", CLOSE_POLICY)
            await self._send_error(ProtocolErrorCode.TOO_MANY_FRAMES, "frames arrive faster than allowed")
            await self._finish(CLOSE_POLICY)
            return
        if text_data is None:
            await self._protocol_error(ProtocolErrorCode.BINARY_FRAME, "frames must be JSON text")
            return
        limit = get_settings().MAX_FRAME_BYTES
        if len(text_data) > limit:
            await self._protocol_error(
                ProtocolErrorCode.FRAME_TOO_LARGE, f"frames are limited to {limit} characters"
            )
            return
        try:
            content = json.loads(text_data)
        except ValueError as exc:
            await self._protocol_error(ProtocolErrorCode.MALFORMED_JSON, f"invalid JSON: {exc}")
            return
        except RecursionError:
            await self._protocol_error(ProtocolErrorCode.MALFORMED_JSON, "invalid JSON: nested too deeply")
            return
        if not isinstance(content, dict):
            await self._protocol_error(
                ProtocolErrorCode.NOT_AN_OBJECT, "a frame must be a JSON object with a 'type'"
            )
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        """Answer a client message by its type."""
        if content.get("type") == "ping":
            await self.send(text_data=PongMessage().model_dump_json())
            return
        kind = content.get("type")
        kind = kind[:32] if isinstance(kind, str) else type(kind).__name__
        await self._protocol_error(
            ProtocolErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}; clients may send 'ping'"
        )

    async def _send_error(self, code: ProtocolErrorCode, detail: str) -> None:
        await self.send(text_data=ProtocolErrorMessage(code=code, detail=detail).model_dump_json())

    async def _protocol_error(self, code: ProtocolErrorCode, detail: str) -> None:
        await self._send_error(code, detail)
        self.protocol_errors += 1
        if self.protocol_errors >= get_settings().MAX_PROTOCOL_ERRORS:
            self._limited("sent too many bad frames", CLOSE_POLICY)
            await self._send_error(ProtocolErrorCode.TOO_MANY_ERRORS, "closing after repeated bad frames")
            await self._finish(CLOSE_POLICY)

    def too_slow(self) -> None:
        """More than MAX_QUEUED_BYTES wait for this socket: it is dropped, and may resume by seq."""
        self._limited(
            f"did not take its frames (over {get_settings().MAX_QUEUED_BYTES} bytes queued)", CLOSE_TOO_SLOW
        )

    def _extra(self, **more: Any) -> dict[str, Any]:
        """Fields of this socket's log lines (fields of their own with LOG_FORMAT=json)."""
        return {"task_id": self.task_id, "client": self.client, **more}

    def _limited(self, what: str, code: int) -> None:
        message = "progress: client %s %s; closed a watcher of %s"
        log.warning(message, self.client, what, self.task_id, extra=self._extra(code=code))

    async def _finish(self, code: int) -> None:
        """Stop sending and close the socket; the group is left on disconnect."""
        if self.finished:
            return
        self.finished = True
        self.close_code = code
        self._stop_heartbeat()
        await self.close(code)

    async def restart(self) -> None:
        """The process is stopping: close with the restart code, and wait until the socket is gone
        (the client answered the close), so the close frame is not lost with the process."""
        self.inbox.put({"type": "server.restart"})
        if self.loop_task is not None:
            await asyncio.wait([self.loop_task])

    async def server_restart(self, message: dict[str, Any]) -> None:
        """In turn with the rest of the socket's messages, so no frame is cut."""
        if self.finished:
            return
        self.finished = True
        self.close_code = code = shutdown.restart_code()
        self._stop_heartbeat()
        try:
            await self.server_send({"type": "websocket.close", "code": code})
        except Exception:  # daphne's autobahn refuses 1012: its private twin says the same
            self.close_code = code = shutdown.PRIVATE_RESTART
            await self.server_send({"type": "websocket.close", "code": code})

    async def disconnect(self, code: int) -> None:
        """The client closed (or the connection dropped): remember its code for the close line."""
        if getattr(self, "close_code", None) is None:
            self.close_code = code

    async def cleanup(self) -> None:
        """The socket is gone, however its loop ended: leave the group, free the address's slot."""
        if getattr(self, "connected_at", None) is not None:
            duration = round(time.monotonic() - self.connected_at, 3)
            code = getattr(self, "close_code", None)
            message = "progress: watcher of %s closed (%s) after %.1f s"
            log.info(message, self.task_id, code, duration, extra=self._extra(code=code, duration_s=duration))
            metrics.CONNECTIONS.dec()
        if getattr(self, "close_code", None) is not None or getattr(self, "connected_at", None) is not None:
            metrics.CLOSES.labels(str(getattr(self, "close_code", None))).inc()
        self._stop_heartbeat()
        collect.socket_closed()
        if getattr(self, "counted", False):
            self.counted = False
            open_sockets.release(self.client)
        if getattr(self, "watching", False):
            self.watching = False
            self.views.unwatch(self.task_id)
        if hasattr(self, "group"):
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as exc:  # the layer forgets the channel on its own (group expiry)
                log.warning("progress: could not leave group %s: %r", self.group, exc)


def _owned_sync(task_id: str, scope: dict[str, Any]) -> bool:
    owner = store.owner(task_id)
    return owner is not None and may_read(owner, owners_of_scope(scope))


_owned = database_sync_to_async(_owned_sync)
