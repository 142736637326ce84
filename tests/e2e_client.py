"""What the end-to-end tests do as outside clients: HTTP with CSRF, WebSocket watchers, Celery workers."""

from __future__ import annotations

import asyncio
import functools
import http.client
import http.cookiejar
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from subprocess import Popen
from typing import Any

import websockets
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from websockets.exceptions import WebSocketException
from websockets.typing import Origin

from progress import watch_token
from progress.schemas import ErrorMessage, ProgressMessage, SnapshotMessage, parse_server_message
from tests.processes import ORIGIN, PYTHON, Server, spawn


class _FromAddress(urllib.request.HTTPHandler):
    """Connects from a chosen loopback address, so one machine plays several clients."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            functools.partial(http.client.HTTPConnection, source_address=(self.source, 0)), req
        )


class Http:
    """A script's HTTP session against one server: keeps cookies, sends the CSRF token; ``source`` is
    the loopback address it connects from (127.0.0.1 unless given)."""

    def __init__(self, server: Server, source: str | None = None, key: str | None = None) -> None:
        self.server = server
        self.key = key
        """An API key sent as a bearer credential (then no CSRF token is fetched or sent)."""
        self.jar = http.cookiejar.CookieJar()
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if source is not None:
            handlers.append(_FromAddress(source))
        self.opener = urllib.request.build_opener(*handlers)
        self.token = ""
        self.headers: Message = Message()
        """The headers of the last response (names in any case)."""

    def cookies(self) -> str:
        """The session's cookies as a Cookie header (the session and CSRF cookies, once it has them)."""
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of one request."""
        request = urllib.request.Request(
            self.server.url(path), data=body, method=method, headers=dict(headers or {})
        )
        if self.key is not None:
            request.add_header("Authorization", f"Bearer {self.key}")
        elif method != "GET":
            if not self.token:
                self.token = self.call("GET", "/api/csrf/")[1]["csrf_token"]
            request.add_header("X-CSRFToken", self.token)
        try:
            with self.opener.open(request, timeout=60) as response:
                self.headers = response.headers
                return response.status, _json(response.read(), self.headers)
        except urllib.error.HTTPError as exc:
            self.headers = exc.headers
            return exc.code, _json(exc.read(), self.headers)

    def upload(
        self, name: str, content: bytes, query: str = "", fields: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST /api/tasks/ with ``content`` as the multipart field ``file`` (and ``fields`` beside it),
        as curl -F would."""
        body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile(name, content), **(fields or {})})
        return self.call("POST", f"/api/tasks/{query}", body, {"Content-Type": MULTIPART_CONTENT})


def _json(body: bytes, headers: Message) -> dict[str, Any]:
    """A JSON body, or {} for an empty or HTML one (a page the call was redirected to)."""
    if not body or not str(headers.get("Content-Type", "")).startswith("application/json"):
        return {}
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@dataclass
class Watcher:
    """A WebSocket client of one task on one server; reconnects with ?last_seq until the task ends."""

    server: Server
    task_id: str
    frames: list[tuple[float, Any]] = field(default_factory=list)
    last_seq: int = 0
    reconnects: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def final(self) -> Any:
        """The terminal frame, once received."""
        for _, frame in self.frames:
            if isinstance(frame, ErrorMessage) or (
                isinstance(frame, ProgressMessage) and frame.stage == "complete"
            ):
                return frame
        return None

    def stages(self) -> list[str]:
        """Every stage this watcher learnt of, in order: the snapshot's history, then live frames."""
        seen: list[str] = []
        for _, frame in self.frames:
            names = []
            if isinstance(frame, SnapshotMessage):
                # The history is read after the state and may run ahead of it; live frames bring the rest.
                names = [h.stage for h in frame.history if h.seq <= frame.seq]
            if isinstance(frame, ProgressMessage | SnapshotMessage):
                names.append(frame.stage)
            seen.extend(n for n in names if not seen or seen[-1] != n)
        return seen

    def live(self, stage: str) -> list[int]:
        """The percentages of live progress frames in ``stage``, in arrival order."""
        return [f.percentage for _, f in self.frames if isinstance(f, ProgressMessage) and f.stage == stage]

    async def run(self, attempt: int | None = None) -> None:
        """Collect frames until a terminal frame (of ``attempt``, if given) arrives."""
        while True:
            query = f"?token={watch_token(self.task_id)}"
            query += f"&last_seq={self.last_seq}" if self.last_seq else ""
            try:
                async with websockets.connect(
                    self.server.ws_url(f"/ws/tasks/{self.task_id}/{query}"), origin=Origin(ORIGIN)
                ) as ws:
                    self.connected.set()
                    async for raw in ws:
                        frame = parse_server_message(raw)
                        self.frames.append((time.monotonic(), frame))
                        self.last_seq = max(self.last_seq, getattr(frame, "seq", 0))
                        final = self.final
                        if final is not None and (attempt is None or final.attempt == attempt):
                            return
            except (OSError, TimeoutError, WebSocketException):  # the server or Redis away: retry
                pass
            final = self.final
            if final is not None and (attempt is None or final.attempt == attempt):
                return
            self.reconnects += 1
            await asyncio.sleep(0.3)


def celery_worker(
    env: Mapping[str, str], log_path: Path, pool: str = "solo", timeout: float = 90
) -> Popen[bytes]:
    """A Celery worker process, once ready (solo pool: the job runs in the process a SIGKILL hits)."""
    args = [PYTHON, "-m", "celery", "-A", "transcribe_project", "worker", "-P", pool, "-c", "1", "-l", "info"]
    args += [
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"w{time.monotonic_ns()}@e2e",
    ]
    process = spawn(args, env, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready." in log_path.read_text(errors="replace"):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"celery worker did not start:\n{log_path.read_text(errors='replace')}")


def files_under(root: Path) -> list[Path]:
    """Every file below ``root`` (none if it does not exist)."""
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def children(pid: int) -> list[int]:
    """The PIDs of the processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def slow_upload(
    server: Server, path: str, cookies: str, name: str, content: bytes, chunks: int, pause: float
) -> int:
    """POST a multipart upload to ``path`` in ``chunks`` pieces ``pause`` seconds apart, with a session's
    ``cookies`` (its csrftoken too); the response status."""
    body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile(name, content)})
    secret = dict(part.split("=", 1) for part in cookies.split("; "))["csrftoken"]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: {MULTIPART_CONTENT}\r\nContent-Length: {len(body)}\r\n"
        f"Cookie: {cookies}\r\nX-CSRFToken: {secret}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode())
        step = len(body) // chunks + 1
        for start in range(0, len(body), step):
            writer.write(body[start : start + step])
            await writer.drain()
            await asyncio.sleep(pause)
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
