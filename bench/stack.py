"""The processes of one benchmark run: redis-server, the servers under test, load clients, producers.

Everything binds to 127.0.0.1 on free ports and is stopped by PID when the run ends.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# Server kinds: the product (ASGI server + channel layer) and the baselines: "seed", the design the
# product replaces (FastAPI, a dict of sockets, send_json in a loop), what every table is judged
# against; "dict", the same design as a bare ASGI app; "broadcast", websockets' own fan-out, a floor.
BASELINES = ("seed", "dict", "broadcast")
# Server kinds: "<server>+<layer>" for the product, a baseline's name for the baselines; a
# "-sansio" suffix on uvicorn, seed or dict runs uvicorn with websockets' sans-I/O protocol.


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Return once something accepts on the port; raise if the process died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_baseline(kind: str) -> bool:
    """Whether a server kind is one of the baselines rather than the product."""
    return "+" not in kind


def _uvicorn(app: str, port: int, kind: str) -> list[str]:
    """uvicorn with uvloop and httptools; "-sansio" in the kind selects websockets' sans-I/O protocol."""
    ws = "websockets-sansio" if kind.split("+")[0].endswith("-sansio") else "websockets"
    return [
        *(PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools", "--ws", ws, "--lifespan", "off"),
        *("--no-access-log", "--log-level", "warning"),
    ]


class Stack:
    """Owns every process of a run; ``close()`` stops them all by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_url = ""
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.outputs: dict[int, Path] = {}
        self.counter = 0
        self.profiled: set[int] = set()
        self.db_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        self.secret_key = secrets.token_urlsafe(40)
        """One key for every product process of the run, so the tokens a producer mints open sockets."""

    def _spawn(self, args: list[str], env: dict[str, str], log: str, **kw: Any) -> subprocess.Popen[bytes]:
        with open(self.workdir / log, "ab") as err:
            out: IO[bytes] | int = kw.pop("stdout", err)
            proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=err, **kw)
        self.procs.append(proc)
        return proc

    def env(self, layer: str = "pubsub", **extra: str) -> dict[str, str]:
        """The environment of a product process: settings from variables, as in production."""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="transcribe_project.settings",
            PYTHONPATH=str(ROOT),
            DATABASE_URL=self.db_url,
            DATA_DIR=str(self.workdir),
            REDIS_URL=self.redis_url,
            REDIS_LAYER=layer,
            DEBUG="0",  # DEBUG keeps every SQL query in memory
            PROGRESS_MAX_UPDATES_PER_SECOND="0",
            PROGRESS_MAX_CONNECTIONS_PER_CLIENT="0",  # every watcher comes from one loopback address
            PROGRESS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )
        env.setdefault("SECRET_KEY", self.secret_key)
        env.update(extra)
        return env

    def start_redis(self) -> None:
        """A private redis-server, no persistence."""
        port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--maxclients",
            "10000",
        ]
        proc = self._spawn(args, dict(os.environ), "redis.log")
        wait_for_port(port, proc, "redis-server")
        self.redis_proc = proc
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def migrate(self) -> None:
        """Create the benchmark's SQLite database."""
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=self.env(), check=True)

    def server(
        self, kind: str, heartbeat: float = 3600, port: int = 0
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start one server of ``kind`` (on ``port``, or a free one): the process and its ws:// URL."""
        port = port or free_port()
        hb = str(heartbeat)
        if kind == "broadcast":
            env = dict(os.environ, PYTHONPATH=str(ROOT), HEARTBEAT_INTERVAL=hb)
            args = [PY, "-m", "bench.baselines.broadcast_server", str(port)]
        elif kind.startswith(("dict", "seed")):
            env = dict(os.environ, PYTHONPATH=str(ROOT), HEARTBEAT_INTERVAL=hb)
            module = "seed_server" if kind.startswith("seed") else "dict_server"
            args = _uvicorn(f"bench.baselines.{module}:app", port, kind)
        else:
            server, layer = kind.split("+")
            env = self.env(layer, PROGRESS_HEARTBEAT_INTERVAL=hb)
            if server.startswith("uvicorn"):
                args = _uvicorn("transcribe_project.asgi:application", port, server)
            else:
                app = "transcribe_project.asgi:application"
                args = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", app]
        profiler = Path(PY).with_name("py-spy")
        if os.environ.get("BENCH_PROFILE") and profiler.exists():
            # Sampled without pausing the server; collapsed stacks for reading, written when it stops.
            out = self.workdir / f"profile-{kind}-{port}.txt"
            args = [
                str(profiler),
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "-r",
                "200",
                "-o",
                str(out),
                "--",
                *args,
            ]
        proc = self._spawn(args, env, f"{kind}-{port}.log")
        if args[0].endswith("py-spy"):
            self.profiled.add(proc.pid)
        wait_for_port(port, proc, kind)
        return proc, f"ws://127.0.0.1:{port}"

    def _out(self, proc_kind: str) -> Path:
        self.counter += 1
        return self.workdir / f"{proc_kind}-{self.counter}.json"

    def load(
        self, urls: list[str], concurrency: int = 100, synced: bool = False, **options: bool
    ) -> subprocess.Popen[bytes]:
        """A load-client process holding these watcher URLs; ``wait_ready`` until it has connected.

        ``synced``: a watcher counts as connected once its first frame (the snapshot) arrived.
        ``reconnect``: a closed socket connects again (``resume``: with ``?last_seq=``).
        """
        out = self._out("load")
        # Through a file: 10,000 URLs exceed the kernel's limit on one argument.
        config = out.with_suffix(".config")
        config.write_text(
            json.dumps(
                {"urls": urls, "concurrency": concurrency, "synced": synced, "out": str(out), **options}
            )
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = self._spawn(
            [PY, "-m", "bench.load", str(config)],
            env,
            "load.log",
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
        )
        self.outputs[proc.pid] = out
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen[bytes]) -> None:
        """Block until a load client has connected everything."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"load client failed (see load.log): {line[:300]!r}")

    def finish(self, proc: subprocess.Popen[bytes], wait: float) -> dict[str, Any]:
        """Tell a load client to wait up to ``wait`` s for final frames, then read its results."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(f"finish {wait}\n".encode())
        proc.stdin.flush()
        line = proc.stdout.readline()
        proc.wait(30)
        if not line.startswith(b"DONE"):
            raise RuntimeError(f"load client failed (see load.log): {line[:300]!r}")
        result: dict[str, Any] = json.loads(self.outputs.pop(proc.pid).read_text())
        return result

    def produce(self, config: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start a producer process; read its figures with ``result()``."""
        out = self._out("producer")
        path = out.with_suffix(".config")  # 5,000 task ids exceed the kernel's limit on one argument
        path.write_text(json.dumps({**config, "out": str(out)}))
        proc = self._spawn([PY, "-m", "bench.producer", str(path)], env, "producer.log")
        self.outputs[proc.pid] = out
        return proc

    def result(self, proc: subprocess.Popen[bytes], timeout: float = 300) -> dict[str, Any]:
        """The figures a producer wrote, once it has exited."""
        if proc.wait(timeout) != 0:
            raise RuntimeError(f"producer failed ({proc.returncode}): see producer.log")
        result: dict[str, Any] = json.loads(self.outputs.pop(proc.pid).read_text())
        return result

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process of this run, by PID."""
        if proc.poll() is None:
            # py-spy writes its profile on SIGINT.
            proc.send_signal(signal.SIGINT if proc.pid in self.profiled else signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        """Stop everything still running, newest first."""
        for proc in reversed(list(self.procs)):
            self.stop(proc)
