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


class FakeSocket:
    """A socket whose close the test sends and ends by hand."""

    def __init__(self, log: list[str], name: str, told: asyncio.Event) -> None:
        self.log, self.name, self.told = log, name, told
        self.sent: asyncio.Future[None] | None = None
        self.loop_task: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()

    def restart(self) -> asyncio.Future[None]:
        self.log.append(f"told {self.name}")
        self.told.set()
        self.sent = asyncio.get_running_loop().create_future()
        return self.sent

    def send_close(self) -> None:
        assert self.sent is not None
        self.log.append(f"sent {self.name}")
        self.sent.set_result(None)

    def end(self) -> None:
        assert self.loop_task is not None
        self.loop_task.set_result(None)


async def test_shutdown_closes_in_batches_each_once_the_last_closes_are_sent():
    log: list[str] = []
    told = asyncio.Event()
    sockets = [FakeSocket(log, str(n), told) for n in range(5)]
    loop = asyncio.get_running_loop()
    closing = asyncio.create_task(shutdown.close_in_batches(sockets, 2, loop.time() + 60))
    await told.wait()
    assert log == ["told 0", "told 1"]  # the next batch waits for these closes to be sent
    told.clear()
    sockets[0].send_close()
    sockets[1].send_close()
    await told.wait()
    assert log[4:] == ["told 2", "told 3"]  # not for the browsers' replies (the sockets' ends)
    told.clear()
    for socket in sockets[2:4]:
        socket.send_close()
    await told.wait()
    sockets[4].send_close()
    await asyncio.sleep(0)
    assert not closing.done()  # then it waits for every socket to end
    for socket in sockets:
        socket.end()
    assert await closing == 0


async def test_shutdown_batches_past_the_deadline_tell_the_rest_and_count_them():
    log: list[str] = []
    sockets = [FakeSocket(log, str(n), asyncio.Event()) for n in range(5)]
    loop = asyncio.get_running_loop()
    cut = await shutdown.close_in_batches(sockets, 2, loop.time())  # out of time already
    assert cut == 5
    assert log == [f"told {n}" for n in range(5)]  # every socket still gets its restart close
