"""What the browser tests use: Chromium's launch options, a publishing job process, readers of the page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from progress import watch_token
from tests.conftest import ALL_STAGES, RedisServer
from tests.processes import PYTHON, ROOT, Server, daphne, migrate, project_env, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAGES = list(ALL_STAGES.names)


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's headless Chromium (Playwright never downloads a browser here)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: run scripts/setup.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


WAIT_MS = 30_000
"""How long a DOM expectation waits (a bound on hanging, not a speed requirement)."""

# A job process: reports read as JSON lines from stdin go through progress.publish, as a worker's would.
PUBLISHER = """
import json, sys
import django
django.setup()
from progress.publish import report_error, report_progress, restart_task, wait_until_sent
for line in sys.stdin:
    call = json.loads(line)
    report = {"error": report_error, "restart": restart_task}.get(call.pop("op"), report_progress)
    changed = report(**call)
    print(json.dumps({"changed": changed, "sent": wait_until_sent()}), flush=True)
"""

# Every stage/percentage the page showed, in order, so a test can see it never went backwards.
RECORD_SHOWN = """
window.__shown = [];
new MutationObserver(function () {
  var d = document.body && document.body.dataset;
  if (!d || !d.stage) return;
  var now = d.stage + ":" + d.percentage;
  if (window.__shown[window.__shown.length - 1] !== now) window.__shown.push(now);
}).observe(document, { attributes: true, subtree: true, attributeFilter: ["data-stage", "data-percentage"] });
"""


class Publisher:
    """A separate process publishing reports with the project's API, on the same database and layer."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-c", PUBLISHER],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.log_path = log_path

    def progress(
        self, task_id: str, stage: str, percentage: int, message: str | None = None, *, changed: bool = True
    ) -> None:
        """report_progress, stored and sent before this returns; ``changed``: what it must answer."""
        call = {"task_id": task_id, "stage": stage, "percentage": percentage, "message": message}
        self._call(changed, op="progress", **call)

    def error(self, task_id: str, error_code: str, user_message: str, technical_detail: str) -> None:
        """report_error, stored and sent before this returns."""
        self._call(
            True,
            op="error",
            task_id=task_id,
            error_code=error_code,
            user_message=user_message,
            technical_detail=technical_detail,
        )

    def restart(self, task_id: str, attempt: int) -> None:
        """restart_task (an operator's retry), which must answer the new ``attempt``."""
        self._call(attempt, op="restart", task_id=task_id)

    def _call(self, changed: bool | int, **call: Any) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(call).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"publisher exited:\n{self.log_path.read_text(errors='replace')}")
        assert json.loads(line) == {"changed": changed, "sent": True}, call

    def close(self) -> None:
        """End the process: EOF on stdin, then stop it by PID."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            stop(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Stack:
    """redis-server, a migrated SQLite file, one daphne on them and a publisher process."""

    env: dict[str, str]
    data_dir: Path
    server: Server
    publisher: Publisher


@contextmanager
def running_stack(data_dir: Path) -> Iterator[Stack]:
    """Start redis-server, migrate, start daphne and a publisher; stop them all afterwards."""
    redis = RedisServer(data_dir)
    redis.start()
    try:
        # No coalescing (every report reaches the page); no job counts as dead while the module runs.
        env = project_env(
            data_dir,
            REDIS_URL=redis.url,
            PROGRESS_MAX_UPDATES_PER_SECOND="0",
            PROGRESS_STALE_AFTER="600",
            PROGRESS_HEARTBEAT_INTERVAL="1",
        )
        migrate(env)
        publisher = Publisher(env, data_dir / "publisher.log")
        try:
            with daphne(env, data_dir / "daphne.log") as server:
                yield Stack(env, data_dir, server, publisher)
        finally:
            publisher.close()
    finally:
        redis.stop()


def seq_of(server: Server, task_id: str) -> int:
    """The task's seq, from the server's HTTP snapshot."""
    with urllib.request.urlopen(
        server.url(f"/api/tasks/{task_id}/?token={watch_token(task_id)}")
    ) as response:
        seq: int = json.load(response)["seq"]
    return seq


def task_page(task_id: str) -> str:
    """The task page's path with a watch token, as a share link carries it."""
    return f"/tasks/{task_id}/?token={watch_token(task_id)}"


def new_task_id(name: str) -> str:
    """A task id no other test uses."""
    return f"browser-{name}-{uuid.uuid4().hex[:8]}"


def stage_classes(page: Page) -> dict[str, str]:
    """Each stage of the page's list and its class: done, current or none."""
    classes: dict[str, str] = page.eval_on_selector_all(
        "#stages li", "lis => Object.fromEntries(lis.map(li => [li.dataset.stage, li.className]))"
    )
    return classes


def shown(page: Page) -> list[tuple[str, int]]:
    """Every (stage, percentage) the page displayed, in order."""
    seen: list[str] = page.evaluate("window.__shown")
    return [(s, int(p)) for s, p in (entry.split(":") for entry in seen)]


def never_backwards(seen: list[tuple[str, int]]) -> bool:
    """Whether each displayed state is at or after the one before, in stage order then percentage."""
    ranks = [(STAGES.index(stage), percentage) for stage, percentage in seen]
    return ranks == sorted(ranks)


def expect_shows(page: Page, stage: str, percentage: int) -> None:
    """Wait until the page displays ``stage`` at ``percentage``."""
    body = page.locator("body")
    expect(body).to_have_attribute("data-stage", stage)
    expect(body).to_have_attribute("data-percentage", str(percentage))


class BlackHoleProxy:
    """A TCP relay to a server on 127.0.0.1 that can silently stop relaying its open connections.

    Models a NAT or load balancer that forgot a connection: both ends stay open, nothing gets through.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.links: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        """The http:// URL of ``path`` through the proxy."""
        return f"http://127.0.0.1:{self.port}{path}"

    def swallow_open_connections(self) -> None:
        """From now on, drop every byte of the connections open now, in both directions."""
        with self.lock:
            for _, _, cut in self.links:
                cut.set()

    def close(self) -> None:
        """Close the listener and every relayed connection."""
        self.listener.close()
        with self.lock:
            for client, upstream, _ in self.links:
                client.close()
                upstream.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            cut = threading.Event()
            with self.lock:
                self.links.append((client, upstream, cut))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(src, dst, cut), daemon=True).start()

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket, cut: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not cut.is_set():
                    dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
