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


@dataclass
class Watcher:
    """What one socket saw."""

    received: int = 0
    last_seq: int = 0
    disorder: int = 0
    final: bool = False
    heartbeats: list[float] = field(default_factory=list)


@dataclass
class Totals:
    """Figures over all of this process's watchers."""

    latencies_us: list[int] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


async def _listen(
    ws: ClientConnection, w: Watcher, t: Totals, all_final: asyncio.Event, left: list[int]
) -> None:
    try:
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
                t.latencies_us.append(int((now - float(m.group(2))) * 1e6))
                if not t.first:
                    t.first = now
                t.last = now
                if _COMPLETE in data and not w.final:
                    w.final = True
                    left[0] -= 1
                    if left[0] == 0:
                        all_final.set()
            elif data.startswith(_HEARTBEAT):
                w.heartbeats.append(now)
    except ConnectionClosed:
        pass


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
    synced = bool(config.get("synced"))

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
        listeners.append(asyncio.create_task(_listen(ws, watchers[i], totals, all_final, left)))

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
        "received": [w.received for w in watchers],
        "finals": sum(w.final for w in watchers),
        "disorder": sum(w.disorder for w in watchers),
        "heartbeats": sum(len(w.heartbeats) for w in watchers),
        "max_heartbeat_gaps": gaps,
        "latencies_us": totals.latencies_us,
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
