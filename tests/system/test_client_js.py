"""Unit tests of progress/static/progress/client.js in headless Chromium: a fake socket, a fake clock.

Reconnect, backoff with jitter, resume with last_seq, the heartbeat watchdog, restart closes (1012,
4012), polling while offline, "Reconnect now", and following a retry after a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import chromium
from tests.processes import ROOT

pytestmark = [pytest.mark.e2e]

CLIENT = ROOT / "progress" / "static" / "progress" / "client.js"

HARNESS = ROOT / "tests" / "js" / "harness.js"


def snapshot(seq: int, status: str = "running", attempt: int = 1) -> dict[str, Any]:
    return {"type": "snapshot", "seq": seq, "status": status, "stage": "transcribing", "attempt": attempt}


def progress(seq: int, stage: str = "transcribing", attempt: int = 1) -> dict[str, Any]:
    return {"type": "progress", "seq": seq, "stage": stage, "percentage": 10, "attempt": attempt}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.clock.install(time=0)
    opened.goto("about:blank")
    opened.clock.pause_at(1000)  # installed, the clock still runs with real time: only run_for moves it now
    opened.add_script_tag(path=str(CLIENT))
    opened.add_script_tag(path=str(HARNESS))
    try:
        yield opened
    finally:
        context.close()


def js(page: Page, code: str, arg: Any = None) -> Any:
    """Run ``code`` in the page with ``arg``: an expression's value, or statements (with ``;``)."""
    body = f"{{ {code}; }}" if ";" in code else f"({code})"
    return page.evaluate(f"(arg) => {body}", arg)


def sockets(page: Page) -> int:
    count: int = js(page, "sockets.length")
    return count


def statuses(page: Page) -> list[list[Any]]:
    found: list[list[Any]] = js(page, "events.filter(e => e[0] === 'status').map(e => e.slice(1))")
    return found


def test_client_resumes_with_last_seq_and_skips_repeats(page: Page):
    js(page, "make()")
    assert js(page, "last().url").endswith("/ws/tasks/t1/?token=tok")
    js(page, "last().open()")
    js(page, "last().receive(arg[0]); last().receive(arg[1])", [snapshot(3), progress(4)])
    js(page, "last().drop(1006)")
    page.clock.run_for(740)
    assert sockets(page) == 1  # 1 s bound, jittered to 0.75 s
    page.clock.run_for(20)
    assert sockets(page) == 2
    assert js(page, "last().url").endswith("/ws/tasks/t1/?last_seq=4&token=tok")
    js(page, "last().open()")
    js(page, "last().receive(arg[0]); last().receive(arg[1])", [progress(4), progress(5)])
    seen = js(page, "events.filter(e => e[0] !== 'status').map(e => e.slice(0, 2))")
    assert seen == [["snapshot", 3], ["progress", 4], ["progress", 5]]


def test_client_backoff_doubles_then_warns_and_polls(page: Page):
    js(page, "make()")
    opened_at, polled = [], []
    for _ in range(5):
        js(page, "last().drop(1006)")
        polled.append(js(page, "fetches.length") > 0)
        before = sockets(page)
        waited = 0
        while sockets(page) == before:
            page.clock.run_for(50)
            waited += 50
            assert waited < 20_000
        opened_at.append(waited)
    # 500 ms * 2^n, times 0.75 of jitter: 750, 1500, 3000, 6000, then the 15 s cap (11250).
    assert opened_at == [750, 1500, 3000, 6000, 11250]
    expected = [["reconnecting", n, False] for n in (1, 2, 3, 4)] + [["offline", 5, False]]
    assert statuses(page)[1:6] == expected
    assert polled == [False, False, True, True, True]  # polling starts after the third failure
    assert js(page, "fetches[0]") == "/api/tasks/t1/?token=tok"


def test_client_a_message_resets_the_backoff(page: Page):
    js(page, "make()")
    for _ in range(2):
        js(page, "last().drop(1006)")
        page.clock.run_for(3000)
    js(page, "last().open(); last().receive(arg)", snapshot(1))
    js(page, "last().drop(1006)")
    assert statuses(page)[-1] == ["reconnecting", 1, False]


def test_client_watchdog_abandons_a_silent_socket(page: Page):
    js(page, "make()")  # heartbeats every 1 s: silence for 2.5 s means dead
    js(page, "last().open(); last().receive(arg)", snapshot(1))
    page.clock.run_for(2000)
    js(page, "last().receive({type: 'heartbeat'})")
    page.clock.run_for(2000)
    assert sockets(page) == 1  # the heartbeat kept it
    page.clock.run_for(600)
    assert js(page, "sockets[0].closedWith") == 4000
    assert statuses(page)[-1] == ["reconnecting", 1, False]
    page.clock.run_for(1000)
    assert sockets(page) == 2
    assert js(page, "last().url").endswith("last_seq=1&token=tok")


@pytest.mark.parametrize("code", [1012, 4012])
def test_client_restart_close_reconnects_at_once_without_backing_off(page: Page, code: int):
    js(page, "make()")
    for n in range(4):
        js(page, "last().open(); last().receive(arg)", snapshot(1) if n == 0 else {"type": "heartbeat"})
        js(page, f"last().drop({code})")
        page.clock.run_for(510)  # jitter within 1 s: 0.5 s here, and never growing
        assert sockets(page) == n + 2
        assert statuses(page)[-1] == ["reconnecting", 1, True]
    js(page, "last().open()")
    assert statuses(page)[-1] == ["live", 0, False]


def test_client_unknown_task_stops(page: Page):
    js(page, "make()")
    js(page, "last().drop(4404)")
    page.clock.run_for(60_000)
    assert sockets(page) == 1
    assert js(page, "events[events.length - 1]")[:2] == ["unknown", "t1"]


def test_client_follows_a_retry_after_a_failure_and_ends_on_completion(page: Page):
    js(page, "make()")
    js(page, "last().open(); last().receive(arg)", snapshot(2))
    error = {"type": "error", "seq": 3, "attempt": 1, "error_code": "worker_lost", "user_message": "x"}
    js(page, "last().receive(arg)", error)
    js(page, "last().drop(1006)")  # a failed task is still watched: reconnect
    page.clock.run_for(1000)
    assert sockets(page) == 2
    js(
        page,
        "last().open(); last().receive(arg[0]); last().receive(arg[1])",
        [progress(4, "queued", 2), progress(5, "complete", 2)],
    )
    js(page, "last().drop(1000)")
    page.clock.run_for(60_000)
    assert sockets(page) == 2  # complete: no reconnect
    kinds = js(page, "events.filter(e => e[0] !== 'status')")
    assert kinds == [["snapshot", 2, 1], ["error", 3, 1], ["progress", 4, 2], ["progress", 5, 2]]
    assert statuses(page)[-1] == ["ended", 0, False]


def test_client_polls_while_offline_and_reconnect_now_tries_at_once(page: Page):
    js(page, "make({warnAfter: 1, pollAfter: 1, pollInterval: 2})")
    js(page, "window.pollAnswer = {status: 200, body: arg}", snapshot(7))
    js(page, "last().drop(1006)")
    page.clock.run_for(10)
    assert statuses(page)[-1] == ["offline", 1, False]
    assert js(page, "events.filter(e => e[0] === 'snapshot').map(e => e[1])") == [7]
    js(page, "client.reconnectNow()")
    assert sockets(page) == 2
    assert js(page, "last().url").endswith("last_seq=7&token=tok")
    assert statuses(page)[-1] == ["connecting", 0, False]


def test_client_poll_404_means_unknown(page: Page):
    js(page, "make({pollAfter: 1})")
    js(page, "window.pollAnswer = {status: 404, body: null}")
    js(page, "last().drop(1006)")
    page.clock.run_for(10)
    assert js(page, "events[events.length - 1]")[:2] == ["unknown", "t1"]
    page.clock.run_for(60_000)
    assert sockets(page) == 1


def test_client_harness_clock_moves_only_when_told(page: Page):
    before = js(page, "Date.now()")
    page.wait_for_timeout(300)  # real time passes...
    assert js(page, "Date.now()") == before  # ...the page's does not
    page.clock.run_for(50)
    assert js(page, "Date.now()") == before + 50
