"""A process using channels-redis' own RedisPubSubChannelLayer, for the interoperability tests.

    python -m tests.stock_layer send HOSTS GROUP JSON     group_send one message, then exit
    python -m tests.stock_layer listen HOSTS GROUP COUNT  join GROUP, print "ready", then COUNT messages

HOSTS is a comma-separated list of redis:// URLs; messages are printed as one JSON line each.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis
from channels_redis.pubsub import RedisPubSubChannelLayer


def subscribed(urls: list[str], name: str) -> bool:
    """Whether some host has a subscriber to ``name`` (SUBSCRIBE is sent before Redis applies it)."""
    for url in urls:
        with redis.Redis.from_url(url) as client:
            if dict(client.pubsub_numsub(name)).get(name.encode(), 0):
                return True
    return False


async def main(command: str, hosts: str, group: str, argument: str) -> None:
    urls = hosts.split(",")
    layer = RedisPubSubChannelLayer(hosts=urls)
    if command == "send":
        await layer.group_send(group, json.loads(argument))
    elif command == "listen":
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        deadline = time.monotonic() + 10
        while not (subscribed(urls, channel) and subscribed(urls, f"asgi__group__{group}")):
            assert time.monotonic() < deadline, "Redis never applied the subscriptions"
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        for _ in range(int(argument)):
            print(json.dumps(await layer.receive(channel)), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")
    await layer.flush()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
