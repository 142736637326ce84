"""Unit tests start no process, and their code never sleeps: time is injected, so they are fast and exact."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = str(Path(__file__).resolve().parent.parent)


def _refuse(what: str) -> None:
    raise AssertionError(f"a unit test may not {what}: inject the clock, or move it to tests/system")


def _from_a_test() -> bool:
    """Whether the sleep was called by test code (the application's own timers may wait)."""
    return sys._getframe(2).f_code.co_filename.startswith(TESTS)


@pytest.fixture(autouse=True)
def _no_sleeps_or_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    real_time_sleep, real_asyncio_sleep = time.sleep, asyncio.sleep

    def time_sleep(seconds: float) -> None:
        if seconds > 0 and _from_a_test():
            _refuse(f"sleep ({seconds} s)")
        real_time_sleep(seconds)

    async def asyncio_sleep(delay: float, result: Any = None) -> Any:
        if delay > 0 and _from_a_test():
            _refuse(f"sleep ({delay} s)")
        return await real_asyncio_sleep(delay, result)

    def no_popen(*args: Any, **kwargs: Any) -> None:
        _refuse(f"start a process ({args[1] if len(args) > 1 else kwargs.get('args')!r})")

    monkeypatch.setattr(time, "sleep", time_sleep)
    monkeypatch.setattr(asyncio, "sleep", asyncio_sleep)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_popen)
