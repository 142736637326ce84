"""Heartbeat timers for many sockets: one event-loop timer per time slot, not one per socket.

A socket that waits for its next heartbeat is one entry in a set; a TimerHandle per socket was the
largest object a consumer of ours kept while idle. Due times are rounded up to the slot, so a
heartbeat is late by less than ``resolution`` and never early.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("progress")

T = TypeVar("T", bound=Hashable)


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the wheel needs of an event loop: its time, and a call at a time of it."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object], /) -> Handle: ...


class TimerWheel(Generic[T]):
    """Calls ``fire(target)`` for each target once its due time has passed, from the loop's own timer."""

    def __init__(self, fire: Callable[[T], None], resolution: float, clock: Clock | None = None) -> None:
        self.fire = fire
        self.resolution = resolution
        self.clock = clock
        """The loop whose timer it uses (tests pass a fake); None: the running loop."""
        self.slots: dict[int, set[T]] = {}
        self.pending: list[int] = []  # the slots' numbers, as a heap
        self.armed: tuple[int, Handle] | None = None

    def add(self, when: float, target: T) -> int:
        """Fire ``target`` at loop time ``when`` (rounded up to a slot); returns the slot, for discard()."""
        slot = math.ceil(when / self.resolution)
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
            heapq.heappush(self.pending, slot)
            self._arm()
        members.add(target)
        return slot

    def discard(self, slot: int, target: T) -> None:
        """Forget a target added to ``slot`` (nothing if it fired already)."""
        members = self.slots.get(slot)
        if members is not None:
            members.discard(target)

    def __len__(self) -> int:
        return sum(len(members) for members in self.slots.values())

    def _arm(self) -> None:
        """Make the loop call _run at the earliest pending slot."""
        first = self.pending[0]
        if self.armed is not None:
            if self.armed[0] <= first:
                return
            self.armed[1].cancel()
        self.armed = (first, self._clock().call_at(first * self.resolution, self._run))

    def _clock(self) -> Clock:
        return self.clock if self.clock is not None else asyncio.get_running_loop()

    def _run(self) -> None:
        self.armed = None
        now = self._clock().time()
        while self.pending and self.pending[0] * self.resolution <= now:
            for target in self.slots.pop(heapq.heappop(self.pending), ()):
                try:
                    self.fire(target)
                except Exception:
                    log.exception("progress: a timer's callback failed")
        if self.pending:
            self._arm()  # the loop may call a timer a little early: then the slot waits for the next


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[object, float], TimerWheel[Any]]] = (
    weakref.WeakKeyDictionary()
)


def resolution_for(interval: float) -> float:
    """The slot width for timers repeating every ``interval`` seconds: a twentieth, 50 ms to 1 s."""
    return min(1.0, max(0.05, interval / 20))


def wheel(fire: Callable[[T], None], resolution: float) -> TimerWheel[T]:
    """The running loop's wheel that calls ``fire`` at ``resolution``, made on first use."""
    wheels = _wheels.setdefault(asyncio.get_running_loop(), {})
    found = wheels.get((fire, resolution))
    if found is None:
        found = wheels[(fire, resolution)] = TimerWheel(fire, resolution)
    return found
