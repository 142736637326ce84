"""LOG_FORMAT=json: one JSON object per line, with the task id on a watcher's connect and close lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from progress.logs import JsonFormatter, RedactSecrets, redact
from tests.processes import manage, migrate, project_env, runserver, serving


def test_logs_json_formatter_keeps_extra_fields():
    record = logging.LogRecord("progress", logging.INFO, __file__, 1, "watcher of %s closed", ("t1",), None)
    record.task_id, record.code = "t1", 4404
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "watcher of t1 closed"
    assert (line["level"], line["logger"], line["task_id"], line["code"]) == ("INFO", "progress", "t1", 4404)
    assert line["timestamp"].endswith("+00:00")
    assert isinstance(line["process"], int)


def test_logs_json_formatter_keeps_the_traceback_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("progress", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_logs_redact_replaces_every_token_value():
    line = "GET /tasks/abc/?token=AAA.BBB.CCC&x=1 and /ws/tasks/abc/?a=b&TOKEN=zzz;key=k9 HTTP/1.1"
    assert redact(line) == (
        "GET /tasks/abc/?token=[redacted]&x=1 and /ws/tasks/abc/?a=b&TOKEN=[redacted];key=[redacted] HTTP/1.1"
    )


def test_logs_redact_leaves_other_text_alone():
    assert redact("token count=3, ?tokens=1") == "token count=3, ?tokens=1"


def test_logs_redact_filter_rewrites_tuple_and_mapping_arguments():
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s" %d',
        ("1.2.3.4", "GET", "/x?token=s3", 200),
        None,
    )
    assert RedactSecrets().filter(access)
    assert access.getMessage() == '1.2.3.4 - "GET /x?token=[redacted]" 200'
    daphne = logging.LogRecord("django.channels.server", logging.INFO, __file__, 1, "HTTP %(path)s", (), None)
    daphne.args = {"path": "/x/?token=s3"}
    RedactSecrets().filter(daphne)
    assert daphne.getMessage() == "HTTP /x/?token=[redacted]"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "uvicorn-json", "daphne-runserver"])
async def test_logs_carry_no_watch_token(tmp_path: Path, server: str):
    # runserver prints its access lines only with DEBUG on, as in development.
    debug = "1" if server == "daphne-runserver" else "0"
    env = project_env(tmp_path, LOG_FORMAT="json" if server.endswith("json") else "plain", DEBUG=debug)
    migrate(env)
    out = manage(["report_progress", "logged", "queued", "0", "--token"], env)
    token = out.split("watch token: ")[1].strip()
    log_path = tmp_path / "server.log"
    context = runserver(env, log_path) if server == "daphne-runserver" else serving("uvicorn", env, log_path)
    with context as running_server:
        status = await asyncio.to_thread(_get_status, running_server.url(f"/api/tasks/logged/?token={token}"))
        assert status == 200
        # A refusal is logged as a warning by every server, runserver included.
        status = await asyncio.to_thread(_get_status, running_server.url(f"/api/tasks/gone/?token={token}"))
        assert status == 404
        async with running_server.connect(f"/ws/tasks/logged/?token={token}") as ws:
            await asyncio.wait_for(ws.recv(), 30)
        deadline = time.monotonic() + 10
        while "/gone/" not in running_server.log() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        text = running_server.log()
    assert "/api/tasks/gone/?token=[redacted]" in text  # the access line is there, without its secret
    assert token not in text
    assert token.split(".")[-1] not in text  # not even the signature alone


def _get_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


DAPHNE_QUIET = {"uvicorn": (), "daphne": ("-v", "0")}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uvicorn", "daphne", "runserver"])
async def test_logs_json_lines_from_a_real_server(tmp_path: Path, kind: str):
    env = project_env(tmp_path, LOG_FORMAT="json")
    migrate(env)
    out = manage(["report_progress", "logged", "queued", "0", "--token"], env)
    token = out.split("watch token: ")[1].strip()
    log = tmp_path / f"{kind}.log"
    # Bare daphne writes its access log straight to stdout unless quiet (-v 0); runserver and uvicorn
    # log theirs.
    running = runserver(env, log) if kind == "runserver" else serving(kind, env, log, *DAPHNE_QUIET[kind])
    with running as server:
        async with server.connect(f"/ws/tasks/logged/?token={token}") as ws:
            await asyncio.wait_for(ws.recv(), 30)
        async with server.connect("/ws/tasks/logged/", token=False) as ws:  # refused: 4404
            await asyncio.wait_for(ws.wait_closed(), 30)
        deadline = time.monotonic() + 10
        while server.log().count('"code"') < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    ours = [line for line in lines if line.get("task_id") == "logged"]
    messages = [line["message"] for line in ours]
    assert any("connected" in m for m in messages), messages
    closes = [line for line in ours if "closed" in line["message"]]
    assert [(line["code"], "duration_s" in line) for line in closes] == [(1000, True)]  # the client's close
    assert any(line.get("code") == 4404 and "refused" in line["message"] for line in ours)
    assert all({"timestamp", "level", "logger", "message", "process"} <= set(line) for line in lines)
