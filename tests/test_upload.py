"""The ASGI upload guard: size refused from Content-Length, uploading progress, interrupted uploads."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from progress import areport_progress
from progress.models import Task, TaskEvent
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
    settings.PROGRESS = {"MAX_UPLOAD_BYTES": 1000}
    headers = [(b"content-type", MULTIPART_CONTENT.encode()), (b"content-length", b"10000000")]
    status, body = await post("/api/tasks/", b"", headers)
    assert status == 413
    assert b"file_too_large" in body


async def test_upload_without_content_length_is_411(media):
    status, body = await post("/api/tasks/", b"", [(b"content-type", MULTIPART_CONTENT.encode())])
    assert (status, b"length_required" in body) == (411, True)


async def test_upload_with_chosen_id_reports_uploading_then_queued(media, tmp_path):
    wav = await sync_to_async(make_speech_wav)(tmp_path / "audio")
    body, headers = multipart(wav.read_bytes())
    status, _ = await post("/api/tasks/?task_id=up1", body, headers)
    assert status == 201
    history = await sync_to_async(stages)("up1")
    assert history[:2] == ["uploading", "queued"]
    while (await Task.objects.aget(pk="up1")).status == "running":  # noqa: ASYNC110 - the pool job ends here
        await asyncio.sleep(0.1)


async def test_upload_to_an_existing_task_id_is_409(media):
    await areport_progress("up1", "queued", 0)
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE")
    status, body = await post("/api/tasks/?task_id=up1", body, headers)
    assert (status, b"task_exists" in body) == (409, True)


async def test_upload_interrupted_fails_the_chosen_task(media):
    body, headers = multipart(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 10_000)
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/api/tasks/",
        "raw_path": b"/api/tasks/",
        "query_string": b"task_id=up2",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    communicator = ApplicationCommunicator(application(), scope)  # type: ignore[no-untyped-call]
    partial = {"type": "http.request", "body": body[:2000], "more_body": True}
    await communicator.send_input(partial)  # type: ignore[no-untyped-call]
    await communicator.send_input({"type": "http.disconnect"})  # type: ignore[no-untyped-call]
    await communicator.wait(10)  # type: ignore[no-untyped-call]
    task = await Task.objects.aget(pk="up2")
    assert (task.status, task.error_code) == ("failed", "upload_interrupted")
    assert not [p for p in media.rglob("*") if p.is_file()]
