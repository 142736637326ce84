"""The heartbeat wheel: fires each target once, never early, late by less than a slot, on one timer."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from progress.timers import TimerWheel, resolution_for, wheel


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """A loop's clock and timers, moved only by ``advance``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    @property
    def armed(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, seconds: float) -> None:
        """Move the clock, calling each timer that falls due, in order, as the loop would."""
        end = self.now + seconds
        while True:
            due = sorted((h for h in self.armed if h.when <= end), key=lambda h: h.when)
            if not due:
                break
            handle = due[0]
            self.handles.remove(handle)
            self.now = max(self.now, handle.when)
            handle.callback()
        self.now = end


def make(fire: Callable[[str], None], resolution: float = 0.05) -> tuple[TimerWheel[str], FakeLoop]:
    loop = FakeLoop()
    return TimerWheel(fire, resolution, loop), loop


def test_timers_fire_after_due_within_a_slot():
    fired: dict[str, float] = {}

    def fire(name: str) -> None:
        fired[name] = loop.now

    timers, loop = make(fire)
    start = loop.now
    timers.add(start + 0.1, "a")
    timers.add(start + 0.21, "b")
    loop.advance(0.099)
    assert fired == {}
    loop.advance(0.2)
    assert set(fired) == {"a", "b"}
    assert start + 0.1 <= fired["a"] < start + 0.1 + 0.05
    assert start + 0.21 <= fired["b"] < start + 0.21 + 0.05


def test_timers_never_fire_early_when_the_loop_calls_early():
    fired: list[str] = []
    timers, loop = make(fired.append)
    timers.add(loop.now + 0.1, "a")
    (handle,) = loop.armed
    loop.handles.remove(handle)
    handle.callback()  # the loop runs the timer before its time
    assert fired == []
    assert len(loop.armed) == 1  # re-armed for the same slot
    loop.advance(0.2)
    assert fired == ["a"]


def test_timers_discard_before_due_never_fires():
    fired: list[str] = []
    timers, loop = make(fired.append)
    slot = timers.add(loop.now + 0.05, "a")
    timers.add(loop.now + 0.05, "b")
    timers.discard(slot, "a")
    loop.advance(1)
    assert fired == ["b"]


def test_timers_earlier_slot_added_later_fires_first():
    fired: list[str] = []
    timers, loop = make(fired.append)
    timers.add(loop.now + 0.3, "late")
    timers.add(loop.now + 0.05, "early")
    assert len(loop.armed) == 1  # the later timer was replaced by the earlier one
    loop.advance(0.15)
    assert fired == ["early"]
    loop.advance(0.3)
    assert fired == ["early", "late"]
    assert len(timers) == 0
    assert loop.armed == []


def test_timers_one_loop_timer_for_many_targets():
    fired: list[str] = []
    timers, loop = make(fired.append)
    for n in range(1000):
        timers.add(loop.now + 0.1, str(n))
    assert len(timers.pending) == 1
    assert len(loop.armed) == 1
    loop.advance(0.2)
    assert sorted(fired, key=int) == [str(n) for n in range(1000)]


def test_timers_failing_callback_logged_others_fire(caplog):
    fired: list[str] = []

    def fire(name: str) -> None:
        if name == "bad":
            raise ValueError("broken")
        fired.append(name)

    timers, loop = make(fire)
    with caplog.at_level(logging.ERROR, logger="progress"):
        timers.add(loop.now + 0.05, "bad")
        timers.add(loop.now + 0.05, "good")
        loop.advance(0.2)
    assert fired == ["good"]
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)


async def test_timers_wheel_one_per_loop_and_resolution():
    def fire(target: object) -> None:
        pass

    assert wheel(fire, 0.5) is wheel(fire, 0.5)
    assert wheel(fire, 0.5) is not wheel(fire, 1.0)


@pytest.mark.parametrize(("interval", "resolution"), [(30, 1.0), (5, 0.25), (0.1, 0.05)])
def test_timers_resolution_for(interval, resolution):
    assert resolution_for(interval) == resolution
