"""Real server processes for end-to-end tests: environment, migrate, start, wait for the port, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ORIGIN = "http://127.0.0.1"
"""The Origin header non-browser clients must send (its host is in ALLOWED_HOSTS)."""

# Variables of the test run's own environment that would change what a child process talks to.
_INHERITED_OVERRIDES = (
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "DATABASE_URL",
    "DATA_DIR",
    "CELERY_BROKER_URL",
    "DEBUG",
    "ALLOWED_HOSTS",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment for a child process of this project: a private DATA_DIR and explicit overrides."""
    env = {
        k: v for k, v in os.environ.items() if k not in _INHERITED_OVERRIDES and not k.startswith("PROGRESS_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="transcribe_project.settings",
        DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(overrides)
    return env


def manage(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> str:
    """Run ``manage.py <args>`` to completion; its output, or an error carrying it."""
    done = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def migrate(env: Mapping[str, str]) -> None:
    """Create the schema in the database the environment names."""
    manage(["migrate", "--noinput", "-v", "0"], env)


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Block until something accepts on 127.0.0.1:port; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a process started by ``spawn`` (and its children) by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        # spawn() made the process a session leader, so its group id is its own PID.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def spawn(args: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, output to ``log_path``; stop it with ``stop``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args), env=dict(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


class Server:
    """A running HTTP/WebSocket server process of this project on 127.0.0.1."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, log_path: Path, env: Mapping[str, str]
    ) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.env = dict(env)
        """The server's environment, for ``manage`` calls against the same database and layer."""
        self.tokens: dict[str, str] = {}
        """Watch tokens of tasks a test made, by task id."""

    def url(self, path: str = "/") -> str:
        """The http:// URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        """The ws:// URL of ``path`` on this server."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def connect(self, path: str, *, token: bool = True, **kwargs: Any) -> Any:
        """A ``websockets`` client of ``path`` (with a watch token for its task) sending the allowed
        Origin, never through a proxy."""
        from websockets.asyncio.client import connect

        from tests.conftest import with_token

        options: dict[str, Any] = {"origin": ORIGIN, "proxy": None, "open_timeout": 60, **kwargs}
        return connect(self.ws_url(with_token(path) if token else path), **options)

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(args: Sequence[str], env: Mapping[str, str], port: int, log_path: Path) -> Iterator[Server]:
    """Run a server command until the block ends; it must listen on ``port``."""
    process = spawn(args, env, log_path)
    try:
        try:
            wait_for_port(port, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its output:\n{log_path.read_text(errors='replace')}") from None
        yield Server(process, port, log_path, env)
    finally:
        stop(process)


APP = "transcribe_project.asgi:application"


def server_args(kind: str, port: int, *options: str, python: str = PYTHON, app: str = APP) -> list[str]:
    """The command of a ``daphne`` or ``uvicorn`` (websockets-sansio, as in production) server process
    serving ``app`` (this project's, unless told) with ``python``."""
    if kind == "daphne":
        return [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *options, app]
    return [
        python,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        *options,
        app,
    ]


@contextmanager
def serving(
    kind: str, env: Mapping[str, str], log_path: Path, *options: str, port: int | None = None
) -> Iterator[Server]:
    """A ``daphne`` or ``uvicorn`` server process on 127.0.0.1 (migrate the database first)."""
    port = port or free_port()
    with running(server_args(kind, port, *options), env, port, log_path) as server:
        yield server


@contextmanager
def daphne(env: Mapping[str, str], log_path: Path, port: int | None = None) -> Iterator[Server]:
    """``daphne transcribe_project.asgi:application`` on 127.0.0.1 (migrate the database first)."""
    with serving("daphne", env, log_path, port=port) as server:
        yield server


@contextmanager
def runserver(env: Mapping[str, str], log_path: Path, port: int | None = None) -> Iterator[Server]:
    """``manage.py runserver --noreload 127.0.0.1:<port>`` (daphne's, since daphne is an installed app)."""
    port = port or free_port()
    args = [PYTHON, str(ROOT / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{port}"]
    with running(args, env, port, log_path) as server:
        yield server
