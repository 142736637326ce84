"""scripts/scale_out.sh as an operator runs it: redis-server, two uvicorn processes (deploy/'s flags) and
a Celery worker, every line JSON under LOG_FORMAT=json, all stopped with the script."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port, project_env, spawn, stop, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]


def _two_free_ports() -> int:
    """A port that is free, with the next one free too (the script's second server takes it)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def test_scale_out_serves_with_uvicorn_and_logs_json(tmp_path: Path):
    port = _two_free_ports()
    env = project_env(
        tmp_path,
        PORT=str(port),
        REDIS_PORT=str(free_port()),
        SERVERS="2",
        WORKERS="1",
        LOG_FORMAT="json",
    )
    script = spawn(["bash", str(ROOT / "scripts" / "scale_out.sh")], env, tmp_path / "scale_out.out")
    try:
        for p in (port, port + 1):
            wait_for_port(p, script, timeout=120)
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=10) as response:
                assert json.loads(response.read()) == {"status": "ok"}
        worker_log = tmp_path / "logs" / "worker-1.log"
        deadline = time.monotonic() + 60
        while "ready" not in (worker_log.read_text() if worker_log.exists() else ""):
            assert script.poll() is None, (tmp_path / "scale_out.out").read_text()
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.2)
    finally:
        stop(script)
    for p in (port, port + 1):
        log = (tmp_path / "logs" / f"uvicorn-{p}.log").read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert any("Uvicorn running" in line["message"] for line in lines)  # uvicorn's own, as JSON
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p), timeout=1).close()  # stopped with the script
