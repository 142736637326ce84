"""Per-process fan-out: each task's group is joined once per process, not once per watcher.

The channel layer delivers a group message to every channel in the group. With one channel per
watcher, a process holding 1,000 watchers of a task received, queued, deserialized and dispatched the
same message 1,000 times (a task and a thread-sensitive hop per message per socket in Channels). Here
one channel per process and event loop (the hub's) joins the group of every task it has watchers
for; the hub receives each message once and hands it to its local watchers, in order.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from . import store

log = logging.getLogger("progress")


class Watcher(Protocol):
    """A local receiver of a task's group messages."""

    def deliver(self, event: dict[str, Any]) -> None:
        """Take one group message; must not block (queue it and send it from a task)."""


class Hub:
    """The channel of one process (and loop) on the layer, joined to the groups of its watched tasks."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.watchers: dict[str, set[Watcher]] = {}
        self.joined: set[str] = set()
        self.lock = asyncio.Lock()
        """Serialises group_add/group_discard, so a join and a leave of one group never interleave."""
        self.receiver: asyncio.Task[None] | None = None

    async def join(self, group: str, watcher: Watcher) -> None:
        """Register a watcher; returns once the process is in the group (nothing later is missed)."""
        self.watchers.setdefault(group, set()).add(watcher)
        if group in self.joined:
            return
        async with self.lock:
            if group in self.joined:
                return
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self.receiver is None or self.receiver.done():
                self.receiver = asyncio.create_task(self._receive(self.channel))
            await self.layer.group_add(group, self.channel)
            self.joined.add(group)

    async def leave(self, group: str, watcher: Watcher) -> None:
        """Unregister a watcher; the last one of a group takes the process out of it."""
        members = self.watchers.get(group)
        if members is None:
            return
        members.discard(watcher)
        if members:
            return
        async with self.lock:
            if self.watchers.get(group):
                return  # a watcher joined while we waited
            self.watchers.pop(group, None)
            if group in self.joined:
                self.joined.discard(group)
                await self.layer.group_discard(group, self.channel)
            if not self.watchers:
                await self._stop()

    async def _stop(self) -> None:
        """Nobody watches anything here: stop receiving, so an idle process holds no subscription."""
        receiver, self.receiver, self.channel = self.receiver, None, None
        if receiver is not None:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _receive(self, channel: str) -> None:
        failing = False
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Watchers recover what this loses from the database (seq gap, heartbeat check).
                if not failing:
                    log.error("progress: channel layer receive failed, live fan-out paused: %r", exc)
                failing = True
                await asyncio.sleep(1)
                continue
            if failing:
                log.warning("progress: channel layer receive works again, live fan-out resumed")
                failing = False
            if message.get("type") != "task.event":
                log.warning("progress: ignored a group message of type %r", message.get("type"))
                continue
            for watcher in tuple(self.watchers.get(store.group_name(message["task_id"]), ())):
                watcher.deliver(message)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub(layer: Any) -> Hub:
    """The hub of the running loop for this channel layer (a new layer, as in tests, gets a new hub)."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None or current.layer is not layer:
        current = _hubs[loop] = Hub(layer)
    return current
