"""The heartbeat wheel: fires each target once, never early, late by less than a slot, on one timer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from progress.timers import TimerWheel, resolution_for, wheel


async def test_timers_fire_after_due_within_a_slot():
    loop = asyncio.get_running_loop()
    fired: dict[str, float] = {}

    def fire(name: str) -> None:
        fired[name] = loop.time()

    timers: TimerWheel[str] = TimerWheel(fire, 0.05)
    start = loop.time()
    timers.add(start + 0.1, "a")
    timers.add(start + 0.2, "b")
    await asyncio.sleep(0.4)
    assert set(fired) == {"a", "b"}
    assert start + 0.1 <= fired["a"] < start + 0.1 + 0.05 + 0.1  # a slot, plus the loop's own lateness
    assert fired["a"] < fired["b"]


async def test_timers_discard_before_due_never_fires():
    fired: list[str] = []
    timers: TimerWheel[str] = TimerWheel(fired.append, 0.05)
    slot = timers.add(asyncio.get_running_loop().time() + 0.05, "a")
    timers.add(asyncio.get_running_loop().time() + 0.05, "b")
    timers.discard(slot, "a")
    await asyncio.sleep(0.2)
    assert fired == ["b"]


async def test_timers_earlier_slot_added_later_fires_first():
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    timers: TimerWheel[str] = TimerWheel(fired.append, 0.05)
    timers.add(loop.time() + 0.3, "late")
    timers.add(loop.time() + 0.05, "early")
    await asyncio.sleep(0.15)
    assert fired == ["early"]
    await asyncio.sleep(0.3)
    assert fired == ["early", "late"]
    assert len(timers) == 0


async def test_timers_one_loop_timer_for_many_targets():
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    timers: TimerWheel[int] = TimerWheel(fired.append, 0.05)
    due = loop.time() + 0.1
    for n in range(1000):
        timers.add(due, n)
    assert len(timers.pending) == 1
    await asyncio.sleep(0.3)
    assert sorted(fired) == list(range(1000))


async def test_timers_failing_callback_logged_others_fire(caplog):
    fired: list[str] = []

    def fire(name: str) -> None:
        if name == "bad":
            raise ValueError("broken")
        fired.append(name)

    timers: TimerWheel[str] = TimerWheel(fire, 0.05)
    due = asyncio.get_running_loop().time() + 0.05
    with caplog.at_level(logging.ERROR, logger="progress"):
        timers.add(due, "bad")
        timers.add(due, "good")
        await asyncio.sleep(0.2)
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
