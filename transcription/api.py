"""The bodies of the transcription app's HTTP answers, as models: for the OpenAPI document
(progress.openapi) and for clients that want types. The views build the same fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["CsrfToken", "Reservation", "Retried", "TaskLinks", "TaskRow", "TaskRows", "Transcript"]


class TaskLinks(BaseModel):
    """Where to watch and read a task; every link carries a watch token, so it can be shared."""

    task_id: str
    watch_token: str
    ws_url: str
    status_url: str
    result_url: str
    share_url: str


class Reservation(TaskLinks):
    """A task in stage ``uploading`` that waits for its file at ``upload_url``."""

    upload_url: str


class Retried(TaskLinks):
    """The task's new attempt, queued."""

    attempt: int


class TaskRow(BaseModel):
    """One of the requester's tasks, as the page's list draws it."""

    task_id: str
    name: str
    size: int | None
    duration: float | None
    status: str
    stage: str
    percentage: int
    attempt: int
    created_at: str
    token: str
    share_url: str
    owned: bool


class TaskRows(BaseModel):
    """The requester's own tasks, newest first."""

    tasks: list[TaskRow]


class Transcript(BaseModel):
    """The transcript: its text and timed segments (with speakers when there are several)."""

    model_config = {"extra": "allow"}
    text: str | None = None
    segments: list[dict[str, Any]] | None = None


class CsrfToken(BaseModel):
    """Django's CSRF token for a cookie session's requests (also set as the csrftoken cookie)."""

    csrf_token: str
