"""The page in headless Chromium against real processes: redis-server, daphne and a Celery worker.

Several files at once, every stage in order, transcripts and the four downloads, a share link in a
second browser, a refused file, a killed worker and Retry (followed live by another tab), a server
restart mid-job, and a bar that never goes back within an attempt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, WebSocketRoute, expect

from tests.browser import WAIT_MS, chromium
from tests.conftest import RedisServer
from tests.e2e_client import celery_worker
from tests.fixtures_audio import make_speech_wav
from tests.processes import Server, daphne, free_port, migrate, project_env, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]

STAGES = ["uploading", "queued", "transcribing", "aligning", "diarizing", "complete"]
JOB_MS = 180_000
"""How long a whole transcription may take on a loaded machine (a bound on hanging)."""

# Every stage and bar value each row showed, and every text of the connection indicator, in order.
RECORD = """
window.__rec = { stages: {}, bars: {}, connection: [] };
new MutationObserver(function (mutations) {
  mutations.forEach(function (m) {
    var el = m.target;
    if (el.id === "connection-text") {
      var c = window.__rec.connection, text = el.textContent;
      if (c[c.length - 1] !== text) c.push(text);
      return;
    }
    if (!el.classList || !el.classList.contains("row") || !el.dataset.taskId) return;
    var id = el.dataset.taskId;
    if (m.attributeName === "data-stage") {
      var s = window.__rec.stages[id] = window.__rec.stages[id] || [];
      if (s[s.length - 1] !== el.dataset.stage) s.push(el.dataset.stage);
    } else if (m.attributeName === "data-bar") {
      (window.__rec.bars[id] = window.__rec.bars[id] || []).push([+el.dataset.attempt, +el.dataset.bar]);
    }
  });
}).observe(document, {
  attributes: true, childList: true, subtree: true, attributeFilter: ["data-stage", "data-bar"]
});
"""


@dataclass
class Stack:
    """The processes of the module: daphne on a fixed port (restartable), Celery workers per test."""

    env: dict[str, str]
    data_dir: Path
    port: int
    exits: ExitStack
    server: Server | None = None
    worker: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start_server(self) -> None:
        log = self.data_dir / f"daphne-{os.urandom(3).hex()}.log"
        self.server = self.exits.enter_context(daphne(self.env, log, port=self.port))

    def stop_server(self) -> None:
        """SIGTERM, as a deploy does: the server closes its sockets with 4012 and exits."""
        assert self.server is not None
        stop(self.server.process)

    def start_worker(self) -> None:
        self.worker = celery_worker(self.env, self.data_dir / f"worker-{os.urandom(3).hex()}.log")

    def kill_worker(self) -> None:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)
        self.worker = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server, a migrated SQLite database and daphne on a fixed port (restartable); workers per test."""
    data_dir = tmp_path_factory.mktemp("page")
    redis = RedisServer(data_dir)
    redis.start()
    try:
        env = project_env(
            data_dir,
            REDIS_URL=redis.url,
            PROGRESS_STALE_AFTER="3",
            PROGRESS_HEARTBEAT_INTERVAL="1",
            TRANSCRIPTION_MAX_UPLOAD_BYTES=str(5 * 1024 * 1024),
        )
        migrate(env)
        with ExitStack() as exits:
            stack = Stack(env, data_dir, free_port(), exits)
            stack.start_server()
            yield stack
    finally:
        redis.stop()


@pytest.fixture
def worker(stack: Stack) -> Iterator[Stack]:
    """A Celery worker for this test (solo pool: a SIGKILL hits the job itself)."""
    stack.start_worker()
    try:
        yield stack
    finally:
        if stack.worker is not None:
            stop(stack.worker)
            stack.worker = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=WAIT_MS)
    with chromium() as launched:
        yield launched


@contextmanager
def person(browser: Browser) -> Iterator[Page]:
    """A page in its own browser context (its own cookies: another person), recording what it shows."""
    context: BrowserContext = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.add_init_script(RECORD)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two short spoken files with different names."""
    made = []
    for name in ("first", "second"):
        wav = make_speech_wav(tmp_path_factory.mktemp(name))
        made.append(wav.rename(wav.with_name(f"{name} take.wav")))
    return made


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40 s of speech: long enough to interrupt."""
    return make_speech_wav(tmp_path_factory.mktemp("long"), seconds_min=40)


def row(page: Page, name: str) -> Locator:
    return page.locator(".row", has=page.locator(".row-name", has_text=name))


def upload_until_transcribing(page: Page, stack: Stack, audio: Path) -> Locator:
    """Open the upload page, send ``audio``, and wait until its row shows the job transcribing."""
    page.goto(stack.url("/"))
    page.set_input_files("#files", [str(audio)])
    mine = row(page, audio.name)
    expect(mine).to_have_attribute("data-stage", "transcribing", timeout=JOB_MS)
    return mine


def console_problems(page: Page) -> list[str]:
    """Filled with every error the page logs or throws (a script that failed, a CSP refusal)."""
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # Chromium logs every failed request without its URL: those come from the response hook.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return problems


def task_id_of(page: Page, name: str) -> str:
    found = row(page, name)
    expect(found).to_have_attribute("data-task-id", re.compile(".+"))
    value = found.get_attribute("data-task-id")
    assert value is not None
    return value


def recorded(page: Page) -> dict[str, Any]:
    rec: dict[str, Any] = page.evaluate("window.__rec")
    return rec


def assert_bar_never_back(page: Page, task_id: str) -> None:
    """Within each attempt the row's bar value only rises."""
    bars = recorded(page)["bars"][task_id]
    for attempt in {a for a, _ in bars}:
        values = [v for a, v in bars if a == attempt]
        assert values == sorted(values), (attempt, values)
    assert bars[-1][1] == 100


def timings(body: str, separator: str) -> list[tuple[str, str]]:
    pattern = (
        rf"^(\d\d:\d\d:\d\d{re.escape(separator)}\d{{3}}) --> (\d\d:\d\d:\d\d{re.escape(separator)}\d{{3}})$"
    )
    return re.findall(pattern, body, re.M)


def check_downloads(page: Page, base: str, name: str, segments: list[dict[str, Any]]) -> None:
    """The four downloads of a row parse, with rising timestamps and the transcript's text."""
    texts = [s["text"] for s in segments]
    stem = name.rsplit(".", 1)[0]
    for fmt in ("txt", "json", "srt", "vtt"):
        href = row(page, name).locator(f"a.download[data-format={fmt}]").get_attribute("href")
        assert href is not None
        response = page.context.request.get(base + href)
        assert response.status == 200, fmt
        assert f'filename="{stem}.{fmt}"' in response.headers["content-disposition"]
        body = response.text()
        if fmt == "json":
            assert [s["text"] for s in json.loads(body)["segments"]] == texts
        elif fmt == "txt":
            assert [line.split("] ", 1)[1] for line in body.splitlines()] == texts  # one voice: no label
        else:
            separator = "," if fmt == "srt" else "."
            found = timings(body, separator)
            assert len(found) == len(texts), body
            starts = [start for start, _ in found]
            assert starts == sorted(starts)
            assert all(end >= start for start, end in found)
            lines = [
                line for line in body.splitlines()[1:] if line and "-->" not in line and not line.isdigit()
            ]
            spoken = [re.sub(r"^(<v [^>]*>|SPEAKER_\d+: )", "", line) for line in lines]
            assert spoken == texts
            if fmt == "vtt":
                assert body.startswith("WEBVTT\n")


def test_page_two_files_and_a_refused_one_at_once(
    stack: Stack, worker: Stack, browser: Browser, speech, tmp_path
):
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("these are meeting notes, not a recording\n" * 20)
    with person(browser) as page:
        problems = console_problems(page)
        page.goto(stack.url("/"))
        page.set_input_files("#files", [str(speech[0]), str(speech[1]), str(not_audio)])
        refused = row(page, "notes.txt")
        expect(refused).to_have_attribute("data-status", "refused")
        expect(refused.locator(".problem-text")).to_contain_text("not audio")
        expect(refused.locator(".retry")).to_be_hidden()
        for wav in speech:
            expect(row(page, wav.name)).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        for wav in speech:
            task_id = task_id_of(page, wav.name)
            assert recorded(page)["stages"][task_id] == STAGES
            assert_bar_never_back(page, task_id)
            result = page.context.request.get(stack.url(f"/api/tasks/{task_id}/result")).json()
            assert result["segments"]
            shown = row(page, wav.name).locator(".transcript li")
            expect(shown).to_have_count(len(result["segments"]))
            expect(shown.first).to_contain_text(result["segments"][0]["text"])
            expect(row(page, wav.name).locator(".row-meta")).to_contain_text("0:0")  # size · duration
            check_downloads(page, stack.url(""), wav.name, result["segments"])
        # The list survives a reload, newest first (the two files were reserved together, so either
        # may be first of them), each with its share link.
        page.reload()
        names = page.locator("#rows .row-name")
        expect(names).to_have_count(3)
        listed = names.all_inner_texts()
        assert listed[0] == "notes.txt"
        assert sorted(listed[1:]) == sorted(wav.name for wav in speech)
        for wav in speech:
            expect(row(page, wav.name)).to_have_attribute("data-status", "complete")
            expect(row(page, wav.name).locator(".share-link")).to_have_value(
                re.compile("/transcriptions/.+token=")
            )
        # Only the refused upload's own answer may show up: no script error, no CSP refusal, no 404.
        assert [p for p in problems if not re.match(r"415 .*/api/uploads/[^/]+$", p)] == []


def test_page_share_link_in_a_second_browser_follows_live(
    stack: Stack, worker: Stack, browser: Browser, long_speech: Path
):
    with person(browser) as owner, person(browser) as friend:
        mine = upload_until_transcribing(owner, stack, long_speech)
        link = mine.locator(".share-link").input_value()
        assert "/transcriptions/" in link
        assert "token=" in link
        friend.emulate_media(reduced_motion="reduce")
        friend.goto(link)
        theirs = row(friend, long_speech.name)
        transition = "el => getComputedStyle(el).transitionDuration"
        assert theirs.locator(".bar.task .bar-fill").evaluate(transition) == "0s"
        assert mine.locator(".bar.task .bar-fill").evaluate(transition) != "0s"
        expect(theirs).to_have_attribute("data-stage", re.compile("transcribing|aligning|diarizing"))
        expect(friend.locator("#connection-text")).to_have_text("Live")
        expect(theirs).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        expect(mine).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        expect(theirs.locator(".transcript li").first).to_be_visible()
        expect(theirs.locator(".retry")).to_be_hidden()  # a share link reads; it does not act
        expect(owner.locator("#announcer")).to_contain_text(f"{long_speech.name}: done")
        mine.locator(".copy").focus()
        owner.keyboard.press("Enter")  # every control works from the keyboard
        expect(mine.locator(".copy")).to_have_text("Copied")
        task_id = task_id_of(friend, long_speech.name)
        assert_bar_never_back(friend, task_id)
        result = friend.context.request.get(
            stack.url(f"/api/tasks/{task_id}/result?token={link.split('token=')[1]}")
        )
        check_downloads(friend, stack.url(""), long_speech.name, result.json()["segments"])


def test_page_killed_worker_fails_and_retry_is_followed_by_another_tab(
    stack: Stack, worker: Stack, browser: Browser, long_speech: Path
):
    with person(browser) as page, person(browser) as friend:
        mine = upload_until_transcribing(page, stack, long_speech)
        stack.kill_worker()
        expect(mine).to_have_attribute("data-status", "failed")
        expect(mine.locator(".problem-text")).not_to_be_empty()
        mine.locator(".details-toggle").click()
        expect(mine.locator(".details")).to_be_visible()
        expect(mine.locator(".details-toggle")).to_have_attribute("aria-expanded", "true")

        friend.goto(mine.locator(".share-link").input_value())
        theirs = row(friend, long_speech.name)
        expect(theirs).to_have_attribute("data-status", "failed")
        expect(theirs.locator(".retry")).to_be_hidden()

        stack.start_worker()
        mine.locator(".retry").click()
        for watching in (mine, theirs):
            expect(watching).to_have_attribute("data-attempt", "2")
            expect(watching).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        task_id = task_id_of(page, long_speech.name)
        for tab in (page, friend):
            assert_bar_never_back(tab, task_id)
            assert recorded(tab)["stages"][task_id][-4:] == [
                "transcribing",
                "aligning",
                "diarizing",
                "complete",
            ]
        expect(theirs.locator(".transcript li").first).to_be_visible()


def test_page_server_restart_mid_job_reconnects_and_misses_no_stage(
    stack: Stack, worker: Stack, browser: Browser, long_speech: Path
):
    with person(browser) as page:
        mine = upload_until_transcribing(page, stack, long_speech)
        expect(page.locator("#connection-text")).to_have_text("Live")
        stack.stop_server()
        expect(page.locator("#connection-text")).to_contain_text("Reconnecting")
        stack.start_server()
        expect(page.locator("#connection-text")).to_have_text("Live")
        expect(mine).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        task_id = task_id_of(page, long_speech.name)
        assert recorded(page)["stages"][task_id] == STAGES
        assert_bar_never_back(page, task_id)
        assert any(text.startswith("Reconnecting") for text in recorded(page)["connection"])
        assert not any(text.startswith("Connection lost") for text in recorded(page)["connection"])


def test_page_warns_after_repeated_failures_and_reconnect_now_recovers(stack: Stack, browser: Browser):
    with person(browser) as page:
        page.goto(stack.url("/"))
        csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
        reserved = page.context.request.post(stack.url("/api/tasks/reserve"), headers={"X-CSRFToken": csrf})
        assert reserved.status == 201
        task_id = reserved.json()["task_id"]
        refusing = [True]

        def flaky(ws: WebSocketRoute) -> None:
            if refusing[0]:
                ws.close(code=1011, reason="refused by the test")
            else:
                ws.connect_to_server()

        page.route_web_socket("**/ws/tasks/**", flaky)
        page.reload()
        mine = page.locator(f'.row[data-task-id="{task_id}"]')
        expect(mine).to_have_attribute("data-stage", "uploading")  # from the list, then by polling
        expect(page.locator("#connection-text")).to_contain_text("Reconnecting… (attempt 2)")
        expect(page.locator("#reconnect")).to_be_hidden()  # a blip or two is no cause for alarm
        expect(page.locator("#connection")).to_have_attribute("data-state", "offline", timeout=60_000)
        expect(page.locator("#connection-text")).to_have_text(re.compile("Connection lost"))
        refusing[0] = False
        page.locator("#reconnect").click()
        expect(page.locator("#connection-text")).to_have_text("Live")
        expect(page.locator("#reconnect")).to_be_hidden()


def test_page_dropped_files_become_rows(stack: Stack, browser: Browser):
    with person(browser) as page:
        page.goto(stack.url("/"))
        dropped = page.evaluate_handle(
            """() => {
              const transfer = new DataTransfer();
              transfer.items.add(new File(["just some text"], "dropped notes.txt", { type: "text/plain" }));
              const huge = new Uint8Array(6 * 1024 * 1024);
              transfer.items.add(new File([huge], "huge.wav", { type: "audio/wav" }));
              return transfer;
            }"""
        )
        page.dispatch_event("#drop", "dragover", {"dataTransfer": dropped})
        expect(page.locator("#drop")).to_have_class(re.compile("over"))
        page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
        expect(page.locator("#drop")).not_to_have_class(re.compile("over"))
        notes, huge = row(page, "dropped notes.txt"), row(page, "huge.wav")
        expect(notes).to_have_attribute("data-status", "refused")
        expect(notes.locator(".problem-text")).to_contain_text("not audio")
        # Over the size limit: refused in the browser, before a task or a byte reaches the server.
        expect(huge).to_have_attribute("data-status", "refused")
        expect(huge.locator(".problem-text")).to_contain_text("too large")
        assert huge.get_attribute("data-task-id") is None


HIDE_TAB = """
Object.defineProperty(document, "hidden", { value: true, configurable: true });
document.dispatchEvent(new Event("visibilitychange"));
"""
"""What a browser does when the person switches to another tab (headless Chromium never hides one)."""


def test_page_cancel_retry_delete_place_in_line_and_a_hidden_tab(
    stack: Stack, worker: Stack, browser: Browser, long_speech: Path, speech: list[Path]
):
    with person(browser) as page:
        problems = console_problems(page)
        page.on("dialog", lambda dialog: dialog.accept())  # every Cancel and Delete asks first
        running = upload_until_transcribing(page, stack, long_speech)
        page.set_input_files("#files", [str(speech[0])])
        waiting = row(page, speech[0].name)
        expect(waiting).to_have_attribute("data-place", "0")  # one worker: next in line
        expect(waiting.locator(".row-eta")).to_contain_text("Next in line")
        expect(waiting.locator(".cancel")).to_be_visible()

        page.evaluate(HIDE_TAB)  # the person looks elsewhere from now on
        running.locator(".cancel").click()
        expect(running).to_have_attribute("data-status", "cancelled")
        expect(running.locator(".badge")).to_have_text("Cancelled")
        expect(running.locator(".cancel")).to_be_hidden()
        expect(waiting).to_have_attribute("data-stage", "transcribing", timeout=JOB_MS)  # the worker is free

        running.locator(".retry").click()
        expect(running).to_have_attribute("data-status", "running")
        expect(running).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        expect(waiting).to_have_attribute("data-status", "complete", timeout=JOB_MS)
        expect(page).to_have_title("✓ 2 done — Transcribe")  # the cancel, the person's own doing, is not news

        # One voice: the transcript (opened when the job ends) carries no speaker label on every line.
        expect(waiting.locator(".transcript li").first).to_be_visible()
        expect(waiting.locator(".transcript .speaker")).to_have_count(0)

        finished_id = task_id_of(page, speech[0].name)
        waiting.locator(".delete").click()
        expect(waiting).to_have_count(0)
        page.reload()
        expect(row(page, long_speech.name)).to_have_attribute("data-status", "complete")
        expect(row(page, speech[0].name)).to_have_count(0)
        gone = page.context.request.get(stack.url(f"/api/tasks/{finished_id}/"))
        assert gone.status == 404
        assert problems == []
