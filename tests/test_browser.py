"""The JS client and the task page in real headless Chromium, against a real daphne on the Redis layer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocket, expect, sync_playwright

from progress.schemas import ProgressStage
from tests.conftest import RedisServer
from tests.processes import PYTHON, ROOT, Server, daphne, free_port, migrate, project_env, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

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
STAGES = [s.value for s in ProgressStage]
WAIT_MS = 30_000
"""How long a DOM expectation waits (a bound on hanging, not a speed requirement)."""

# A job process: reports read as JSON lines from stdin go through progress.publish, as a worker's would.
_PUBLISHER = """
import json, sys
import django
django.setup()
from progress.publish import report_error, report_progress, wait_until_sent
for line in sys.stdin:
    call = json.loads(line)
    report = report_error if call.pop("op") == "error" else report_progress
    changed = report(**call)
    print(json.dumps({"changed": changed, "sent": wait_until_sent()}), flush=True)
"""

# Every stage/percentage the page showed, in order, so a test can see it never went backwards.
_RECORD_SHOWN = """
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
                [PYTHON, "-c", _PUBLISHER],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.log_path = log_path

    def progress(self, task_id: str, stage: str, percentage: int, message: str | None = None) -> None:
        """report_progress, stored and sent before this returns."""
        self._call(op="progress", task_id=task_id, stage=stage, percentage=percentage, message=message)

    def error(self, task_id: str, error_code: str, user_message: str, technical_detail: str) -> None:
        """report_error, stored and sent before this returns."""
        self._call(
            op="error",
            task_id=task_id,
            error_code=error_code,
            user_message=user_message,
            technical_detail=technical_detail,
        )

    def _call(self, **call: Any) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(call).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"publisher exited:\n{self.log_path.read_text(errors='replace')}")
        assert json.loads(line) == {"changed": True, "sent": True}, call

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("browser")
    redis = RedisServer(data_dir)
    redis.start()
    try:
        # No coalescing (every report reaches the page); no job counts as dead while the module runs.
        env = project_env(
            data_dir,
            REDIS_URL=redis.url,
            PROGRESS_MAX_UPDATES_PER_SECOND="0",
            PROGRESS_STALE_AFTER="600",
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: run scripts/setup.sh")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    opened.add_init_script(_RECORD_SHOWN)
    try:
        yield opened
    finally:
        context.close()


def new_task_id(name: str) -> str:
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
    ranks = [(STAGES.index(stage), percentage) for stage, percentage in seen]
    return ranks == sorted(ranks)


def expect_shows(page: Page, stage: str, percentage: int) -> None:
    body = page.locator("body")
    expect(body).to_have_attribute("data-stage", stage)
    expect(body).to_have_attribute("data-percentage", str(percentage))


def test_browser_snapshot_marks_earlier_stages_done(stack: Stack, page: Page):
    task_id = new_task_id("snapshot")
    stack.publisher.progress(task_id, "uploading", 100)
    stack.publisher.progress(task_id, "queued", 0)
    stack.publisher.progress(task_id, "transcribing", 40, "Recognising speech")

    page.goto(stack.server.url(f"/tasks/{task_id}/"))

    expect_shows(page, "transcribing", 40)
    expect(page.locator("#message")).to_have_text("Recognising speech")
    expect(page.locator("#status")).to_have_text("live")
    assert page.eval_on_selector("#bar", "bar => bar.value") == 40
    assert stage_classes(page) == {
        "uploading": "done",
        "queued": "done",
        "transcribing": "current",
        "aligning": "",
        "diarizing": "",
        "complete": "",
    }
    assert not page.locator("#error").is_visible()


def test_browser_live_progress_through_complete(stack: Stack, page: Page):
    task_id = new_task_id("live")
    stack.publisher.progress(task_id, "queued", 0, "Waiting for a worker")
    page.goto(stack.server.url(f"/tasks/{task_id}/"))
    expect_shows(page, "queued", 0)
    expect(page.locator("#status")).to_have_text("live")

    steps = [
        ("transcribing", 10, "Recognising speech"),
        ("transcribing", 55, "Recognising speech, half way"),
        ("aligning", 70, "Aligning words"),
        ("diarizing", 90, "Finding speakers"),
    ]
    for stage, percentage, message in steps:
        stack.publisher.progress(task_id, stage, percentage, message)
        expect_shows(page, stage, percentage)
        expect(page.locator("#message")).to_have_text(message)
        classes = stage_classes(page)
        assert classes[stage] == "current"
        assert all(classes[s] == "done" for s in STAGES[: STAGES.index(stage)])
        assert all(classes[s] == "" for s in STAGES[STAGES.index(stage) + 1 :])

    stack.publisher.progress(task_id, "complete", 100, "Done")
    expect_shows(page, "complete", 100)
    expect(page.locator("#message")).to_have_text("Done")
    expect(page.locator("#status")).to_have_text("ended")  # the server closed with 1000; no reconnect
    assert set(stage_classes(page).values()) == {"done"}
    assert page.eval_on_selector("#bar", "bar => bar.value") == 100
    assert shown(page) == [
        ("queued", 0),
        ("transcribing", 10),
        ("transcribing", 55),
        ("aligning", 70),
        ("diarizing", 90),
        ("complete", 100),
    ]


def test_browser_error_shows_user_message_and_detail(stack: Stack, page: Page):
    task_id = new_task_id("error")
    stack.publisher.progress(task_id, "transcribing", 30)
    page.goto(stack.server.url(f"/tasks/{task_id}/"))
    expect_shows(page, "transcribing", 30)
    expect(page.locator("#error")).to_be_hidden()

    detail = "Traceback (most recent call last):\n  RuntimeError: decoder <died> & left"
    stack.publisher.error(task_id, "engine_failed", "We could not transcribe this file.", detail)

    expect(page.locator("body")).to_have_attribute("data-failed", "engine_failed")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-user")).to_have_text("We could not transcribe this file.")
    assert page.text_content("#error-detail") == detail  # as text, not markup
    expect(page.locator("#status")).to_have_text("ended")


def test_browser_failed_task_snapshot_shows_error(stack: Stack, page: Page):
    task_id = new_task_id("failed")
    stack.publisher.progress(task_id, "aligning", 75)
    stack.publisher.error(task_id, "aligner_crashed", "Alignment failed.", "IndexError: word 12")

    page.goto(stack.server.url(f"/tasks/{task_id}/"))

    expect(page.locator("body")).to_have_attribute("data-failed", "aligner_crashed")
    expect(page.locator("#error-user")).to_have_text("Alignment failed.")
    expect(page.locator("#error-detail")).to_have_text("IndexError: word 12")
    expect_shows(page, "aligning", 75)


def test_browser_resumes_after_server_restart(stack: Stack, page: Page):
    task_id = new_task_id("resume")
    stack.publisher.progress(task_id, "queued", 0)
    stack.publisher.progress(task_id, "transcribing", 30, "Recognising speech")
    sockets: list[WebSocket] = []
    received: dict[str, list[str]] = {}

    def opened(ws: WebSocket) -> None:
        sockets.append(ws)
        frames = received.setdefault(ws.url, [])
        ws.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", opened)
    # The HTTP fallback would fetch the new state itself; refusing it leaves the resumed socket to bring it.
    page.route("**/api/tasks/**", lambda route: route.abort())
    port = free_port()
    log = stack.data_dir / "daphne-resume.log"
    with daphne(stack.env, log, port=port) as server:
        page.goto(server.url(f"/tasks/{task_id}/"))
        expect_shows(page, "transcribing", 30)
        expect(page.locator("#status")).to_have_text("live")
        with urllib.request.urlopen(server.url(f"/api/tasks/{task_id}/")) as response:
            seq_before = json.load(response)["seq"]
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    expect(page.locator("#status")).to_have_text("reconnecting")

    stack.publisher.progress(task_id, "aligning", 60, "Aligning words")
    stack.publisher.progress(task_id, "diarizing", 85, "Finding speakers")
    with daphne(stack.env, log, port=port):
        expect_shows(page, "diarizing", 85)
        expect(page.locator("#message")).to_have_text("Finding speakers")
        expect(page.locator("#status")).to_have_text("live")

    resumed = [ws.url for ws in sockets if ws.url.endswith(f"?last_seq={seq_before}")]
    assert resumed
    caught_up = [json.loads(frame) for url in resumed for frame in received[url]]
    stages = [frame["stage"] for frame in caught_up if frame["type"] == "progress"]
    assert stages[:2] == ["aligning", "diarizing"]
    assert never_backwards(shown(page))
    assert shown(page)[-1] == ("diarizing", 85)
    assert stage_classes(page)["aligning"] == "done"


def test_browser_unknown_task_says_so(stack: Stack, page: Page):
    page.goto(stack.server.url(f"/tasks/{new_task_id('nobody')}/"))

    expect(page.locator("#status")).to_have_text("no such task")
    assert page.get_attribute("body", "data-stage") is None
    assert shown(page) == []
