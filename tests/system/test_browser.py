"""The JS client and the task page in real headless Chromium, against a real daphne on the Redis layer."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
from playwright.sync_api import Browser, Page, Route, WebSocket, WebSocketRoute, expect

from tests.browser import (
    RECORD_SHOWN,
    STAGES,
    WAIT_MS,
    BlackHoleProxy,
    Stack,
    chromium,
    expect_shows,
    never_backwards,
    new_task_id,
    running_stack,
    seq_of,
    shown,
    stage_classes,
    task_page,
)
from tests.processes import daphne, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server, a migrated database, daphne and a publisher, shared by the module."""
    with running_stack(tmp_path_factory.mktemp("browser")) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The system's headless Chromium (Playwright never downloads a browser here)."""
    expect.set_options(timeout=WAIT_MS)
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context that records every state it displays."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    opened.add_init_script(RECORD_SHOWN)
    try:
        yield opened
    finally:
        context.close()


def test_browser_snapshot_marks_earlier_stages_done(stack: Stack, page: Page):
    task_id = new_task_id("snapshot")
    stack.publisher.progress(task_id, "uploading", 100)
    stack.publisher.progress(task_id, "queued", 0)
    stack.publisher.progress(task_id, "transcribing", 40, "Recognising speech")

    page.goto(stack.server.url(task_page(task_id)))

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
    page.goto(stack.server.url(task_page(task_id)))
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
    page.goto(stack.server.url(task_page(task_id)))
    expect_shows(page, "transcribing", 30)
    expect(page.locator("#error")).to_be_hidden()

    # With DEBUG off watchers get the detail without paths (and no traceback at all).
    detail = "decoder <died> & left at /srv/media/uploads/x.wav"
    stack.publisher.error(task_id, "engine_failed", "We could not transcribe this file.", detail)

    expect(page.locator("body")).to_have_attribute("data-failed", "engine_failed")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-user")).to_have_text("We could not transcribe this file.")
    assert page.text_content("#error-detail") == "decoder <died> & left at …"  # as text, not markup
    expect(page.locator("#status")).to_have_text("live")  # a failed task is watched on, for a retry

    stack.publisher.restart(task_id, 2)
    expect_shows(page, "queued", 0)
    expect(page.locator("#error")).to_be_hidden()
    stack.publisher.progress(task_id, "complete", 100)
    expect_shows(page, "complete", 100)
    expect(page.locator("#status")).to_have_text("ended")


def test_browser_failed_task_snapshot_shows_error(stack: Stack, page: Page):
    task_id = new_task_id("failed")
    stack.publisher.progress(task_id, "aligning", 75)
    stack.publisher.error(task_id, "aligner_crashed", "Alignment failed.", "IndexError: word 12")

    page.goto(stack.server.url(task_page(task_id)))

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
        page.goto(server.url(task_page(task_id)))
        expect_shows(page, "transcribing", 30)
        expect(page.locator("#status")).to_have_text("live")
        seq_before = seq_of(server, task_id)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    expect(page.locator("#status")).to_have_text("reconnecting")

    stack.publisher.progress(task_id, "aligning", 60, "Aligning words")
    stack.publisher.progress(task_id, "diarizing", 85, "Finding speakers")
    with daphne(stack.env, log, port=port):
        expect_shows(page, "diarizing", 85)
        expect(page.locator("#message")).to_have_text("Finding speakers")
        expect(page.locator("#status")).to_have_text("live")

    resumed = [ws.url for ws in sockets if f"?last_seq={seq_before}&token=" in ws.url]
    assert resumed
    caught_up = [json.loads(frame) for url in resumed for frame in received[url]]
    stages = [frame["stage"] for frame in caught_up if frame["type"] == "progress"]
    assert stages[:2] == ["aligning", "diarizing"]
    assert never_backwards(shown(page))
    assert shown(page)[-1] == ("diarizing", 85)
    assert stage_classes(page)["aligning"] == "done"


def test_browser_task_page_refused_without_owner_or_token(stack: Stack, page: Page):
    task_id = new_task_id("private")
    stack.publisher.progress(task_id, "queued", 0)
    for path in [f"/tasks/{task_id}/", f"/tasks/{task_id}/?token=forged", f"/tasks/{new_task_id('nobody')}/"]:
        response = page.goto(stack.server.url(path))
        assert response is not None
        assert response.status == 404
        expect(page.locator("h1")).to_have_text("No such task")
    assert shown(page) == []


def test_browser_socket_refusal_says_no_such_task(stack: Stack, page: Page):
    task_id = new_task_id("gone")
    stack.publisher.progress(task_id, "queued", 0)
    # Every refusal (a task deleted, a token expired) closes with 4404: the page stops and says so.
    page.route_web_socket("**/ws/tasks/**", lambda ws: ws.close(code=4404))
    page.goto(stack.server.url(task_page(task_id)))

    expect(page.locator("#status")).to_have_text("no such task")
    assert page.get_attribute("body", "data-stage") is None


def test_browser_falls_back_to_polling_when_sockets_drop_after_opening(stack: Stack, page: Page):
    task_id = new_task_id("dropped")
    stack.publisher.progress(task_id, "transcribing", 20, "Recognising speech")
    attempts: list[str] = []

    def drop_after_open(ws: WebSocketRoute) -> None:
        # A proxy that completes every upgrade, then cuts the connection at the first frame.
        attempts.append(ws.url)
        server = ws.connect_to_server()
        server.on_message(lambda _frame: ws.close(code=1011, reason="dropped by the proxy"))

    page.route_web_socket("**/ws/tasks/**", drop_after_open)
    page.goto(stack.server.url(task_page(task_id)))

    # Only the HTTP snapshot can bring the state: the client must back off and poll, not retry forever.
    expect_shows(page, "transcribing", 20)
    expect(page.locator("#message")).to_have_text("Recognising speech")
    expect(page.locator("#status")).to_have_text("reconnecting")
    assert len(attempts) >= 3


def test_browser_polls_one_request_at_a_time(stack: Stack, page: Page):
    task_id = new_task_id("one-poll")
    stack.publisher.progress(task_id, "queued", 0)
    attempts: list[str] = []
    held: list[Route] = []

    def refuse(ws: WebSocketRoute) -> None:
        attempts.append(ws.url)
        ws.close(code=1011, reason="no WebSockets here")

    page.route_web_socket("**/ws/tasks/**", refuse)
    page.route("**/api/tasks/**", lambda route: held.append(route))  # held: not answered yet
    page.goto(stack.server.url(task_page(task_id)))
    try:
        # Polling starts at the third failure; the fourth closes while that first request is still out.
        for _ in range(WAIT_MS // 100):
            if len(attempts) >= 5:
                break
            page.wait_for_timeout(100)
        assert len(attempts) >= 5
        assert len(held) == 1
    finally:
        for route in held:
            route.continue_()


def test_browser_reconnects_when_the_connection_goes_silent(stack: Stack, page: Page):
    task_id = new_task_id("silent")
    stack.publisher.progress(task_id, "transcribing", 30)
    proxy = BlackHoleProxy(stack.server.port)
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    try:
        page.goto(proxy.url(task_page(task_id)))
        expect_shows(page, "transcribing", 30)
        seq_before = seq_of(stack.server, task_id)
        proxy.swallow_open_connections()
        stack.publisher.progress(task_id, "aligning", 60)

        # No heartbeat gets through: the client must give up on the socket and resume on a new one.
        expect_shows(page, "aligning", 60)
        assert any(f"?last_seq={seq_before}&token=" in url for url in urls)
    finally:
        proxy.close()


def test_browser_starts_over_when_the_server_no_longer_knows_its_seq(stack: Stack, page: Page):
    task_id = new_task_id("reset")
    for stage, percentage in (("queued", 0), ("transcribing", 40), ("aligning", 70)):
        stack.publisher.progress(task_id, stage, percentage)
    proxy = BlackHoleProxy(stack.server.port)
    try:
        page.goto(proxy.url(task_page(task_id)))
        expect_shows(page, "aligning", 70)
        proxy.swallow_open_connections()
        # The database loses the task and it is reported anew: its seq is now below the page's.
        with closing(sqlite3.connect(stack.data_dir / "db.sqlite3", timeout=20)) as db, db:
            db.execute("DELETE FROM progress_taskevent WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM progress_task WHERE task_id = ?", (task_id,))
        stack.publisher.progress(task_id, "queued", 0)
        stack.publisher.progress(task_id, "transcribing", 15, "Recognising speech again")

        # The resumed socket answers ?last_seq=3 with bad_last_seq and a snapshot the client starts over from.
        expect_shows(page, "transcribing", 15)
        expect(page.locator("#message")).to_have_text("Recognising speech again")
        assert stage_classes(page)["aligning"] == ""
    finally:
        proxy.close()


def test_browser_unknown_task_says_so_without_websockets(stack: Stack, page: Page):
    task_id = new_task_id("deleted")
    stack.publisher.progress(task_id, "queued", 0)
    page.route_web_socket("**/ws/tasks/**", lambda ws: ws.close(code=1011, reason="no WebSockets here"))
    page.goto(stack.server.url(task_page(task_id)))
    expect_shows(page, "queued", 0)
    with closing(sqlite3.connect(stack.data_dir / "db.sqlite3", timeout=20)) as db, db:
        db.execute("DELETE FROM progress_taskevent WHERE task_id = ?", (task_id,))
        db.execute("DELETE FROM progress_task WHERE task_id = ?", (task_id,))

    # The HTTP fallback's 404 means what the socket's 4404 means.
    expect(page.locator("#status")).to_have_text("no such task")


@pytest.mark.parametrize("code", [1012, 4012])
def test_browser_reconnects_at_once_when_the_server_restarts(stack: Stack, page: Page, code: int):
    task_id = new_task_id(f"restart-{code}")
    stack.publisher.progress(task_id, "transcribing", 20, "Recognising speech")
    opened: list[float] = []
    restarts = 5

    def restarting(ws: WebSocketRoute) -> None:
        # A deploy: each server the socket reaches is draining and says "service restart" at once,
        # before any frame (as a draining process answers a new socket), until one stays up.
        opened.append(time.monotonic())
        if len(opened) <= restarts:
            ws.close(code=code, reason="restarting")
        else:
            ws.connect_to_server()

    page.route_web_socket("**/ws/tasks/**", restarting)
    page.goto(stack.server.url(task_page(task_id)))
    expect_shows(page, "transcribing", 20)
    expect(page.locator("#status")).to_have_text("live")
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(opened)]
    print(f"{code}: reconnects after {gaps} s")
    # At once each time (jitter under 1 s, the backoff not raised); backing off instead (0.5-1 s,
    # doubling) would take 15 s at least for these five.
    assert len(opened) == restarts + 1
    assert opened[-1] - opened[0] < 10.0, gaps
    stack.publisher.progress(task_id, "aligning", 50, "Aligning words")
    expect_shows(page, "aligning", 50)
