"""The reusable app as another project uses it: the wheel built, installed into a new virtualenv with
nothing of this repository, the example project (its own stages, a job in a thread) run under uvicorn,
and an export watched over its WebSocket to the end."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets
from websockets.typing import Origin

from progress.schemas import ProgressMessage, SnapshotMessage, parse_server_message
from tests.processes import free_port, server_args, stop, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ["queued", "fetching", "rendering", "complete"]


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A virtualenv with the wheel (and uvicorn), and a copy of the example project beside it."""
    base = tmp_path_factory.mktemp("example")
    source = base / "source"  # the distribution's files only: the build writes beside them
    source.mkdir()
    for name in ("pyproject.toml", "progress", "docs/progress-app.md"):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, target)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "SECRET_KEY": "example-only-secret-key"}
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(base / "dist"),
            "-q",
        ],
        base,
        {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    (wheel,) = (base / "dist").glob("django_task_progress-*.whl")
    venv = base / "venv"
    run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], base, env)
    # The versions this repository pins and tests (pip's constraints take no extras or comments).
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    constraints = base / "constraints.txt"
    constraints.write_text("\n".join(p for p in pins if p and "[" not in p) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(constraints)]
    run([*pip, str(wheel), "uvicorn", "websockets"], base, env)
    example = base / "example"
    shutil.copytree(ROOT / "examples" / "report_export", example)
    return venv, example, env


def test_example_runs_from_the_wheel_alone(installed):
    venv, example, env = installed
    python = str(venv / "bin" / "python")
    where = run([python, "-c", "import progress; print(progress.__file__)"], example, env)
    assert where.startswith(str(venv)), where  # the installed app, not this checkout
    run([python, "manage.py", "migrate", "-v", "0"], example, env)
    port = free_port()
    app = "export_project.asgi:application"
    with open(example / "server.log", "wb") as log:
        server = subprocess.Popen(
            server_args("uvicorn", port, python=python, app=app),
            cwd=example,  # the example's own project, importable from here
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, server)
        base = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(f"{base}/exports/", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            started = json.loads(response.read())
        frames = asyncio.run(watch(port, started["task_id"], started["token"]))
        with urllib.request.urlopen(base + started["page"], timeout=30) as page:
            html = page.read().decode()
    finally:
        stop(server)
    snapshot = frames[0]
    assert isinstance(snapshot, SnapshotMessage)
    assert snapshot.stages == EXPECTED  # the project's own, told to the client
    seen = [h.stage for h in snapshot.history] + [snapshot.stage]
    seen += [f.stage for f in frames[1:] if isinstance(f, ProgressMessage)]
    assert list(dict.fromkeys(seen)) == EXPECTED
    assert all(f'data-stage="{stage}"' in html for stage in EXPECTED)


async def watch(port: int, task_id: str, token: str) -> list[object]:
    """Every frame of one export, until it completes and the server closes the socket."""
    url = f"ws://127.0.0.1:{port}/ws/tasks/{task_id}/?token={token}"
    frames: list[object] = []
    async with websockets.connect(url, origin=Origin(f"http://127.0.0.1:{port}"), proxy=None) as ws:
        async for raw in ws:
            frames.append(parse_server_message(raw))
    return frames
