"""LOG_FORMAT=json: one JSON object per line, with the task id on a watcher's connect and close lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from progress.logs import JsonFormatter
from tests.processes import manage, migrate, project_env, serving


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


@pytest.mark.e2e
@pytest.mark.slow
async def test_logs_json_lines_from_a_real_server(tmp_path: Path):
    env = project_env(tmp_path, LOG_FORMAT="json")
    migrate(env)
    out = manage(["report_progress", "logged", "queued", "0", "--token"], env)
    token = out.split("watch token: ")[1].strip()
    with serving("uvicorn", env, tmp_path / "uvicorn.log") as server:
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
