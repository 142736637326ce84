"""Graceful restarts, in-process: where the SIGTERM handler may be installed."""

from __future__ import annotations

import asyncio
import signal
import threading

from progress import shutdown


def test_shutdown_install_off_the_main_thread_leaves_signals_alone(monkeypatch):
    # runserver's autoreloader serves from a thread, where signal.signal() raises ValueError.
    monkeypatch.setattr(shutdown, "_installed_pid", None)
    before = signal.getsignal(signal.SIGTERM)
    failures: list[BaseException] = []

    def serve() -> None:
        async def first_request() -> None:
            shutdown.install()

        try:
            asyncio.run(first_request())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()
    assert failures == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_shutdown_restart_codes():
    assert (shutdown.restart_code(), shutdown.PRIVATE_RESTART) == (1012, 4012)
