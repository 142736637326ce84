"""The ASGI upload guard: size refused from Content-Length, uploading progress, interrupted uploads."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from progress import astart_task
from progress.access import SESSION_OWNER_KEY
from progress.models import Task, TaskEvent
from progress.views import NOT_FOUND_BODY
from tests.conftest import application
from tests.fixtures_audio import make_speech_wav

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


TOKEN = b"a" * 32
"""A CSRF secret sent as both the cookie and the header, as a script that fetched /api/csrf/ would."""


def multipart(content: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile("a.wav", content)})
    headers = [
        (b"content-type", MULTIPART_CONTENT.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cookie", b"csrftoken=" + TOKEN),
        (b"x-csrftoken", TOKEN),
    ]
    return body, headers


def stages(task_id: str) -> list[str]:
    rows = TaskEvent.objects.filter(task_id=task_id, stage__isnull=False).values_list("stage", flat=True)
    return [str(stage) for stage in rows]


async def post(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    headers = [(b"host", b"127.0.0.1"), *headers]
    response = await HttpCommunicator(application(), "POST", path, body=body, headers=headers).get_response(
        30
    )
    return response["status"], response["body"]


async def test_upload_oversize_content_length_is_refused_unread(media, settings):
    settings.TRANSCRIPTION_MAX_UPLOAD_BYTES = 1000
    headers = [(b"content-type", MULTIPART_CONTENT.encode()), (b"content-length", b"10000000")]
    status, body = await post("/api/tasks/", b"", headers)
    assert status == 413
    assert b"file_too_large" in body


async def test_upload_without_content_length_is_411(media):
    status, body = await post("/api/tasks/", b"", [(b"content-type", MULTIPART_CONTENT.encode())])
    assert (status, b"length_required" in body) == (411, True)


async def owner_session(settings) -> tuple[str, tuple[bytes, bytes]]:
    """An owner key and the session cookie that holds it."""
    session = SessionStore()
    session[SESSION_OWNER_KEY] = "uploader"
    await asyncio.to_thread(session.save)
    return "session:uploader", (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode())


def with_cookie(headers: list[tuple[bytes, bytes]], cookie: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """``headers`` with the session cookie joined to the CSRF cookie."""
    return [(k, v + b"; " + cookie[1]) if k == b"cookie" else (k, v) for k, v in headers]


async def test_upload_into_a_reservation_reports_uploading_then_queued(media, tmp_path, settings):
    owner, cookie = await owner_session(settings)
    task_id = await astart_task("uploading", owner=owner)
    wav = await sync_to_async(make_speech_wav)(tmp_path / "audio")
    body, headers = multipart(wav.read_bytes())
    status, _ = await post(f"/api/tasks/{task_id}/upload", body, with_cookie(headers, cookie))
    assert status == 201
    history = await sync_to_async(stages)(task_id)
    assert history[:2] == ["uploading", "queued"]
    while (await Task.objects.aget(pk=task_id)).status == "running":  # noqa: ASYNC110 - the pool job ends here
        await asyncio.sleep(0.1)


async def test_upload_into_anothers_reservation_is_refused_unread(media, settings):
    task_id = await astart_task("uploading", owner="session:someone-else")
    _, cookie = await owner_session(settings)
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE")
    for path in [f"/api/tasks/{task_id}/upload", "/api/tasks/nobody/upload"]:
        status, answer = await post(path, body, with_cookie(headers, cookie))
        assert (status, answer) == (404, NOT_FOUND_BODY)
    assert await sync_to_async(stages)(task_id) == ["uploading"]


async def test_upload_interrupted_fails_the_reserved_task(media, settings):
    owner, cookie = await owner_session(settings)
    task_id = await astart_task("uploading", owner=owner)
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 10_000)
    communicator = start(f"/api/tasks/{task_id}/upload", with_cookie(headers, cookie))
    partial = {"type": "http.request", "body": body[:2000], "more_body": True}
    await communicator.send_input(partial)  # type: ignore[no-untyped-call]
    await communicator.send_input({"type": "http.disconnect"})  # type: ignore[no-untyped-call]
    await communicator.wait(10)  # type: ignore[no-untyped-call]
    task = await Task.objects.aget(pk=task_id)
    assert (task.status, task.error_code) == ("failed", "upload_interrupted")
    assert not [p for p in media.rglob("*") if p.is_file()]


async def test_upload_that_stalls_is_dropped_with_408(media, settings):
    settings.TRANSCRIPTION_UPLOAD_IDLE_TIMEOUT = 0.5
    owner, cookie = await owner_session(settings)
    task_id = await astart_task("uploading", owner=owner)
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 10_000)
    communicator = start(f"/api/tasks/{task_id}/upload", with_cookie(headers, cookie))
    await communicator.send_input({"type": "http.request", "body": body[:2000], "more_body": True})  # type: ignore[no-untyped-call]
    response = await communicator.receive_output(5)  # type: ignore[no-untyped-call]
    assert response["status"] == 408
    assert b"upload_timeout" in (await communicator.receive_output(5))["body"]  # type: ignore[no-untyped-call]
    await communicator.wait(10)  # type: ignore[no-untyped-call]
    task = await Task.objects.aget(pk=task_id)
    assert (task.status, task.error_code) == ("failed", "upload_interrupted")
    assert not [p for p in media.rglob("*") if p.is_file()]


def start(path: str, headers: list[tuple[bytes, bytes]]) -> ApplicationCommunicator:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    return ApplicationCommunicator(application(), scope)  # type: ignore[no-untyped-call]


def reserve_headers(cookie: tuple[bytes, bytes] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-length", b"0"), (b"cookie", b"csrftoken=" + TOKEN), (b"x-csrftoken", TOKEN)]
    return with_cookie(headers, cookie) if cookie else headers


async def reserve_status(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    communicator = HttpCommunicator(
        application(), "POST", "/api/tasks/reserve", headers=[(b"host", b"127.0.0.1"), *headers]
    )
    response = await communicator.get_response(30)
    return response["status"], dict(response["headers"])


async def test_upload_rate_per_owner_answers_429_with_retry_after(media, settings):
    settings.TRANSCRIPTION_UPLOADS_PER_MINUTE = 3
    _, cookie = await owner_session(settings)
    answers = [await reserve_status(reserve_headers(cookie)) for _ in range(4)]
    assert [status for status, _ in answers] == [201, 201, 201, 429]
    assert 1 <= int(answers[3][1][b"retry-after"]) <= 60
    assert await Task.objects.filter(owner="session:uploader").acount() == 3


async def test_upload_rate_per_address_counts_fresh_sessions(media, settings):
    settings.TRANSCRIPTION_UPLOADS_PER_MINUTE = 2
    statuses = [
        (await reserve_status(reserve_headers()))[0] for _ in range(3)
    ]  # no cookie: a new session each
    assert statuses == [201, 201, 429]


async def test_upload_over_the_owners_storage_is_429_unread(media, settings):
    from transcription.models import Transcription

    settings.TRANSCRIPTION_MAX_OWNER_BYTES = 10_000
    owner, cookie = await owner_session(settings)
    stored = await astart_task("queued", owner=owner)
    await Transcription.objects.acreate(task_id=stored, audio_path="uploads/x.wav", size=9_000)
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE" + bytes(2_000))
    status, answer = await post("/api/tasks/", body, with_cookie(headers, cookie))
    assert (status, b"storage_quota" in answer) == (429, True)
    assert await Task.objects.acount() == 1
    assert not [p for p in media.rglob("*") if p.is_file()]
