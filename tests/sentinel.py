"""A real Redis Sentinel deployment on loopback ports: a master, a replica and three sentinels."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.conftest import RedisServer, free_port

MASTER = "transcribe"
"""The name the sentinels monitor the master under (REDIS_SENTINEL_MASTER)."""


def sentinel_command(config: Path) -> list[str]:
    """Debian's ``redis-sentinel`` where installed, else the same binary as ``redis-server --sentinel``."""
    binary = shutil.which("redis-sentinel")
    if binary:
        return [binary, str(config)]
    return [shutil.which("redis-server") or "/usr/bin/redis-server", str(config), "--sentinel"]


class SentinelCluster:
    """Start with ``start()``; ``env()`` is what a process needs to follow it; ``stop()`` ends it all."""

    def __init__(self, directory: Path, sentinels: int = 3) -> None:
        self.directory = directory
        self.master = RedisServer(directory / "master")
        self.replica = RedisServer(directory / "replica")
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        """REDIS_SENTINELS and REDIS_SENTINEL_MASTER for a server or worker process."""
        addresses = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return {"REDIS_SENTINELS": addresses, "REDIS_SENTINEL_MASTER": MASTER}

    def start(self) -> None:
        """Master, replica in sync, then the sentinels, once each sees the master, the replica and
        its peers (a failover needs a quorum that knows of each other)."""
        for server in (self.master, self.replica):
            server.directory.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.start()
        with redis.Redis(port=self.replica.port) as replica:
            replica.replicaof("127.0.0.1", self.master.port)
            self._until(lambda: replica.info("replication")["master_link_status"] == "up", "replica sync")
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            # The sentinel rewrites its file as it learns; every line it needs to start is here.
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            log = open(self.directory / f"sentinel-{port}.log", "ab")  # noqa: SIM115 (the process keeps it)
            self.sentinels.append(
                subprocess.Popen(sentinel_command(config), stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        for port in self.sentinel_ports:
            with redis.Redis(port=port) as sentinel:
                peers = len(self.sentinel_ports) - 1
                self._until(functools.partial(_sentinel_sees, sentinel, peers), f"sentinel :{port}")

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        with redis.Redis(port=self.sentinel_ports[0]) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def kill_master(self) -> None:
        """SIGKILL the master's process: no goodbye to anyone."""
        process = self.master.process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        self.master.process = None

    def stop(self) -> None:
        """Stop every process this cluster started, by PID."""
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        self.sentinels = []
        self.replica.stop()
        self.master.stop()

    def _until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready within {timeout} s (logs in {self.directory})")
            time.sleep(0.1)


def _sentinel_sees(sentinel: redis.Redis, peers: int) -> bool:
    """Whether a sentinel knows the master, one replica and ``peers`` other sentinels."""
    master: dict[str, Any] = sentinel.sentinel_master(MASTER)  # type: ignore[assignment]
    return bool(int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= peers)
