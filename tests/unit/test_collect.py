"""Full collections after many closes: none while sockets stay, one once enough have closed."""

from __future__ import annotations

import asyncio
import gc

import pytest

from progress import collect


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each full collection the policy runs (gc.collect is still called)."""
    runs: list[int] = []
    real = gc.collect

    def counted(generation: int = 2) -> int:
        runs.append(generation)
        return real(generation)

    monkeypatch.setattr(gc, "collect", counted)
    monkeypatch.setattr(collect, "_closed", 0)
    return runs


async def test_collect_none_while_sockets_stay(collections):
    collect._check(asyncio.get_running_loop())
    assert collections == []


async def test_collect_once_enough_sockets_closed(collections):
    for _ in range(collect.AFTER_CLOSES - 1):
        collect.socket_closed()
    collect._check(asyncio.get_running_loop())
    assert collections == []
    collect.socket_closed()
    collect._check(asyncio.get_running_loop())
    assert collections == [2]
    collect._check(asyncio.get_running_loop())
    assert collections == [2]  # the count starts again


async def test_collect_frees_what_closed_sockets_leave_in_cycles(collections):
    class Node:
        def __init__(self) -> None:
            self.me = self

    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(collect.AFTER_CLOSES):
            Node()
            collect.socket_closed()
        assert len(gc.get_objects()) >= before + collect.AFTER_CLOSES
        collect._check(asyncio.get_running_loop())
        assert len(gc.get_objects()) < before + collect.AFTER_CLOSES
    finally:
        gc.enable()


async def test_collect_started_once_per_loop(monkeypatch):
    monkeypatch.setattr(collect, "_started", None)
    collect.ensure_started()
    first = collect._started
    collect.ensure_started()
    assert collect._started is first is asyncio.get_running_loop()


async def test_collect_none_in_a_stopping_process(collections, monkeypatch):
    from progress import shutdown

    monkeypatch.setattr(shutdown, "_draining", True)
    for _ in range(collect.AFTER_CLOSES):
        collect.socket_closed()
    collect._check(asyncio.get_running_loop())
    assert collections == []
