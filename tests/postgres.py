"""A throwaway PostgreSQL cluster for tests: initdb in a temporary directory, 127.0.0.1 only."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.processes import free_port

SETUP_HINT = "run scripts/setup.sh (it installs Debian's postgresql)"


def binaries() -> Path:
    """The newest installed server's bin directory (/usr/lib/postgresql/<version>/bin)."""
    found = [
        p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "postgres").exists()
    ]
    if not found:
        raise RuntimeError(f"no PostgreSQL server under /usr/lib/postgresql/*/bin: {SETUP_HINT}")
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0)


class PostgresServer:
    """A private cluster: trust auth on 127.0.0.1 and a socket in its own directory, fsync off."""

    def __init__(self) -> None:
        self.bin = binaries()
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: the cluster belongs to the postgres user.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(f"no 'postgres' OS user to run the server as: {SETUP_HINT}") from None
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.directory = Path(tempfile.mkdtemp(prefix="pgtest-"))
        if self._user:
            os.chown(self.directory, self._user["user"], self._user["group"])
        self.data = self.directory / "data"
        self.log_path = self.directory / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str = "postgres") -> str:
        """A DATABASE_URL for one database of this cluster."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        """An autocommit psycopg connection to one database of this cluster."""
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self, name: str) -> str:
        """Create an empty database; its DATABASE_URL."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        """Everything the server has logged (errors it answered included)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """initdb, start the postmaster and wait until it accepts connections."""
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        done = subprocess.run(
            [*initdb, "--encoding=UTF8", "--no-locale", "--no-sync"],
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
            **self._user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            # Durability is worthless for a cluster deleted after the run; speed is not.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        for _ in range(5):  # another run may take the free port first: then try another
            settings["port"] = str(self.port)
            args = [str(self.bin / "postgres"), "-D", str(self.data)]
            for name, value in settings.items():
                args += ["-c", f"{name}={value}"]
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    args, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, **self._user
                )
            try:
                self._wait_ready()
                return
            except RuntimeError:
                if "could not bind" not in self.log() and "already in use" not in self.log():
                    raise
                self.port = free_port()
        raise RuntimeError(f"postgres found no free port:\n{self.log()}")

    def _wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            try:
                # Through this cluster's own unix socket: a TCP connect could reach another
                # run's cluster that holds the port this one failed to bind.
                with psycopg.connect(host=str(self.directory), port=self.port, user="postgres"):
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise TimeoutError(f"postgres did not accept connections within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Fast shutdown of the postmaster by its PID, then delete the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, stops cleanly
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
