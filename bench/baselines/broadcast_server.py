"""The floor: the same routes as dict_server, fanned out with ``websockets.broadcast``.

Run as ``python -m bench.baselines.broadcast_server PORT``; uvloop, no compression.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

watchers: dict[str, set[ServerConnection]] = {}
HEARTBEAT = float(os.environ.get("HEARTBEAT_INTERVAL", "0"))


async def _beat(ws: ServerConnection) -> None:
    """Send a heartbeat frame every HEARTBEAT seconds, as the product's consumer does."""
    while True:
        await asyncio.sleep(HEARTBEAT)
        await ws.send(json.dumps({"type": "heartbeat", "ts": time.time()}, separators=(",", ":")))


async def handler(ws: ServerConnection) -> None:
    """Watchers join the task's set; a producer's frames are broadcast to that set."""
    assert ws.request is not None
    parts = ws.request.path.strip("/").split("/")
    if parts[0] == "pub":
        async for text in ws:
            broadcast(watchers.get(parts[1], set()), text)
        return
    group = watchers.setdefault(parts[-1], set())
    group.add(ws)
    beat = asyncio.create_task(_beat(ws)) if HEARTBEAT > 0 else None
    try:
        await ws.wait_closed()
    finally:
        group.discard(ws)
        if beat is not None:
            beat.cancel()


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
