"""A load-client process: holds WebSocket watchers and reports what they received, as JSON.

Run by the orchestrator as ``python -m bench.load CONFIG_FILE``. It connects every watcher (with
``synced``, until each has its first frame, the product's snapshot), prints ``READY``, then reads one
stdin line ``finish SECONDS``: it waits up to that long for every watcher's final frame (stage
``complete``), closes all sockets and writes its results as JSON to ``out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

ORIGIN = Origin("http://127.0.0.1")
# Frames are matched as bytes, not parsed: the client must stay cheaper than the servers it measures.
_PROGRESS = re.compile(rb'^\{"type":"progress".*?"seq":(\d+).*?"message":"t=([0-9.]+)"')
_COMPLETE = b'"stage":"complete"'
_HEARTBEAT = b'{"type":"heartbeat"'
_SNAPSHOT = re.compile(rb'^\{"type":"snapshot".*?"seq":(\d+)')
_STAGE = re.compile(rb'"stage":"(\w+)"')
# Closes after which a client goes back at once (with jitter), as progress/static/progress/client.js does.
_RESTART_CODES = (1012, 4012)


@dataclass
class Watcher:
    """What one socket saw."""

    received: int = 0
    last_seq: int = 0
    disorder: int = 0
    final: bool = False
    heartbeats: list[float] = field(default_factory=list)
    stages: set[str] = field(default_factory=set)
    """Stages of the progress frames received (live or caught up), for the reconnect storm."""
    dropped_at: float = 0.0
    back_at: float = 0.0
    """When the socket first dropped, and when its last reconnect was accepted (reconnect storm)."""
    reconnects: int = 0


@dataclass
class Totals:
    """Figures over all of this process's watchers."""

    latencies_us: list[int] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


async def _listen(
    ws: ClientConnection,
    w: Watcher,
    t: Totals,
    all_final: asyncio.Event,
    left: list[int],
    reopen: Any = None,
) -> None:
    """Read one watcher's frames; with ``reopen``, reconnect after every close until its final frame."""
    while True:
        with contextlib.suppress(ConnectionClosed):
            await _read(ws, w, t, all_final, left)
        if reopen is None or w.final:
            return
        if not w.dropped_at:
            w.dropped_at = time.time()
        ws = await reopen(ws.close_code)
        w.back_at = time.time()
        w.reconnects += 1


async def _read(
    ws: ClientConnection, w: Watcher, t: Totals, all_final: asyncio.Event, left: list[int]
) -> None:
    while True:
        data = await ws.recv(decode=False)
        now = time.time()
        assert isinstance(data, bytes)
        m = _PROGRESS.match(data)
        if m is not None:
            seq = int(m.group(1))
            if seq <= w.last_seq:
                w.disorder += 1
                continue
            w.last_seq = seq
            w.received += 1
            stage = _STAGE.search(data)
            if stage is not None:
                w.stages.add(stage.group(1).decode())
            if not w.dropped_at:  # caught-up frames after a reconnect carry old publish times
                t.latencies_us.append(int((now - float(m.group(2))) * 1e6))
            if not t.first:
                t.first = now
            t.last = now
            if _COMPLETE in data and not w.final:
                w.final = True
                left[0] -= 1
                if left[0] == 0:
                    all_final.set()
                return
        elif data.startswith(_HEARTBEAT):
            w.heartbeats.append(now)
        else:
            snap = _SNAPSHOT.match(data)
            if snap is not None:
                w.last_seq = max(w.last_seq, int(snap.group(1)))


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """Connect, wait for the go-ahead, collect, report."""
    urls: list[str] = config["urls"]
    watchers = [Watcher() for _ in urls]
    totals = Totals()
    all_final = asyncio.Event()
    left = [len(urls)]
    sockets: list[ClientConnection | None] = [None] * len(urls)
    listeners: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(config.get("concurrency", 100))
    failed: list[str] = []
    connected_at: list[float] = [0.0] * len(urls)
    opened_at: list[float] = [0.0] * len(urls)
    synced = bool(config.get("synced"))
    resume = bool(config.get("resume"))

    async def reopener(i: int) -> Any:
        """Reconnect watcher ``i``: at once with jitter after a restart close, then with backoff."""

        async def reopen(code: int | None) -> ClientConnection:
            delay = random.uniform(0, 0.5) if code in _RESTART_CODES else random.uniform(0, 0.25)
            attempt = 0
            while True:
                await asyncio.sleep(delay)
                url = urls[i]
                if resume:  # the product: resume from the last seq seen, as the browser client does
                    url += ("&" if "?" in url else "?") + f"last_seq={watchers[i].last_seq}"
                try:
                    return await connect(
                        url,
                        origin=ORIGIN,
                        compression=None,
                        ping_interval=None,
                        open_timeout=60,
                        max_queue=None,
                        close_timeout=1,
                    )
                except Exception:
                    attempt += 1
                    delay = random.uniform(0, min(4.0, 0.25 * 2**attempt))

        return reopen

    async def open_one(i: int) -> None:
        async with gate:
            try:
                ws = await connect(
                    urls[i],
                    origin=ORIGIN,
                    compression=None,
                    ping_interval=None,
                    open_timeout=120,
                    max_queue=None,
                    close_timeout=1,
                )
            except Exception as exc:  # counted and reported: a refused socket is a result
                failed.append(repr(exc)[:200])
                return
            opened_at[i] = time.time()
            if synced:
                # The product's first frame is the task's snapshot: until then the watcher is still
                # connecting (group joined, state read), not yet waiting for live updates.
                try:
                    await asyncio.wait_for(ws.recv(decode=False), 120)
                except Exception as exc:
                    failed.append(f"no snapshot: {exc!r}"[:200])
                    return
        sockets[i] = ws
        connected_at[i] = time.time()
        reopen = await reopener(i) if config.get("reconnect") else None
        listeners.append(asyncio.create_task(_listen(ws, watchers[i], totals, all_final, left, reopen)))

    started = time.time()
    await asyncio.gather(*(open_one(i) for i in range(len(urls))))
    connect_s = time.time() - started
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    wait = float(line.split()[1]) if line.startswith("finish") else 0.0
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_final.wait(), wait)
    hold_end = time.time()
    for ws in sockets:
        if ws is not None:
            ws.transport.abort()
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    gaps = []
    for w, at in zip(watchers, connected_at, strict=True):
        if at:
            beats = [at, *w.heartbeats, hold_end]
            gaps.append(max(b - a for a, b in itertools.pairwise(beats)))
    return {
        "watchers": len(urls),
        "connected": sum(1 for s in sockets if s is not None),
        "failed": len(failed),
        "errors": failed[:3],
        "connect_s": connect_s,
        "started": started,
        "opened_at": opened_at,
        "connected_at": connected_at,
        "received": [w.received for w in watchers],
        "finals": sum(w.final for w in watchers),
        "disorder": sum(w.disorder for w in watchers),
        "heartbeats": sum(len(w.heartbeats) for w in watchers),
        "max_heartbeat_gaps": gaps,
        "latencies_us": totals.latencies_us,
        "stages": [sorted(w.stages) for w in watchers],
        "dropped_at": [w.dropped_at for w in watchers],
        "back_at": [w.back_at for w in watchers],
        "reconnects": sum(w.reconnects for w in watchers),
        "first": totals.first,
        "last": totals.last,
    }


def main() -> None:
    """Entry point: the argument names a JSON config file."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(sys.argv[1]) as f:
        config = json.load(f)
    result = uvloop.run(run(config))
    # A file, not the pipe: results run to megabytes, and the event loop may leave stdout non-blocking.
    with open(config["out"], "w") as out:
        json.dump(result, out)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
