"""The wire protocol: every message a client and the server exchange, as pydantic models."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
Percentage = Annotated[int, Field(ge=0, le=100, strict=True)]
Seq = Annotated[int, Field(ge=0)]


def utcnow() -> datetime:
    """The current time, timezone-aware, as every timestamp on the wire."""
    return datetime.now(UTC)


StageName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
"""One of the project's stages (``PROGRESS["STAGES"]``, then ``complete``): checked against them where
a report comes in, not here, so a client can read any project's frames."""


class TaskStatus(enum.StrEnum):
    """Whether a task is still going, and how it ended."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgressMessage(_Message):
    """A job's progress: its stage and percentage; stage ``complete`` is the terminal success."""

    type: Literal["progress"] = "progress"
    task_id: TaskId
    seq: Seq = 0
    attempt: int = Field(default=1, ge=1)
    stage: StageName
    percentage: Percentage
    message: str | None = Field(default=None, max_length=500)
    timestamp: datetime = Field(default_factory=utcnow)


class ErrorMessage(_Message):
    """A job failed: terminal, stored and replayed to late watchers like completion."""

    type: Literal["error"] = "error"
    task_id: TaskId
    seq: Seq = 0
    attempt: int = Field(default=1, ge=1)
    error_code: str = Field(pattern=r"^[a-z0-9_.-]{1,64}$")
    user_message: str = Field(min_length=1, max_length=500)
    technical_detail: str | None = Field(default=None, max_length=10_000)
    timestamp: datetime = Field(default_factory=utcnow)


class CancelledMessage(_Message):
    """The task was cancelled (by its owner, or deleted): terminal like an error, and retryable."""

    type: Literal["cancelled"] = "cancelled"
    task_id: TaskId
    seq: Seq = 0
    attempt: int = Field(default=1, ge=1)
    timestamp: datetime = Field(default_factory=utcnow)


class QueueMessage(_Message):
    """A waiting task's place in line changed (a job ahead started, ended, was cancelled or deleted).

    Not stored and without a seq: a newer one replaces it, and a snapshot carries the current place."""

    type: Literal["queue"] = "queue"
    task_id: TaskId
    queue_position: int = Field(ge=0)
    starts_in_seconds: float | None = Field(default=None, ge=0)
    timestamp: datetime = Field(default_factory=utcnow)


class HeartbeatMessage(_Message):
    """Sent on an idle socket every HEARTBEAT_INTERVAL seconds, so clients and proxies see it alive."""

    type: Literal["heartbeat"] = "heartbeat"
    timestamp: datetime = Field(default_factory=utcnow)


class PongMessage(_Message):
    """The answer to a client's ``{"type": "ping"}``."""

    type: Literal["pong"] = "pong"
    timestamp: datetime = Field(default_factory=utcnow)


class ProtocolErrorCode(enum.StrEnum):
    """Why a client frame or connection was refused."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    BINARY_FRAME = "binary_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TYPE = "unknown_type"
    BAD_LAST_SEQ = "bad_last_seq"
    TOO_MANY_ERRORS = "too_many_errors"
    TOO_MANY_FRAMES = "too_many_frames"


class ProtocolErrorMessage(_Message):
    """The reply to a frame the server could not use; the connection stays open unless said."""

    type: Literal["protocol_error"] = "protocol_error"
    code: ProtocolErrorCode
    detail: str
    timestamp: datetime = Field(default_factory=utcnow)


class StageTransition(_Message):
    """One entry of a task's stage history."""

    seq: Seq
    attempt: int
    stage: StageName
    timestamp: datetime


class TaskError(_Message):
    """The error a failed task ended with."""

    error_code: str
    user_message: str
    technical_detail: str | None = None


class SnapshotMessage(_Message):
    """A task's whole state at ``seq``: sent first on connect, and served over HTTP."""

    type: Literal["snapshot"] = "snapshot"
    task_id: TaskId
    seq: Seq
    attempt: int
    status: TaskStatus
    stage: StageName
    percentage: Percentage
    message: str | None = None
    error: TaskError | None = None
    history: list[StageTransition]
    created_at: datetime
    timestamp: datetime
    stages: list[StageName] = Field(default_factory=list)
    """The project's stages in order, ``complete`` last: a client needs no list of its own."""
    queue_position: int | None = Field(default=None, ge=0)
    """While it waits: how many tasks start before it (0: next)."""
    starts_in_seconds: float | None = Field(default=None, ge=0)
    """While it waits: the estimated seconds until it starts, from recent jobs' durations (None: unknown)."""


class PingMessage(_Message):
    """A client's liveness probe."""

    type: Literal["ping"]


ServerMessage = Annotated[
    ProgressMessage
    | ErrorMessage
    | CancelledMessage
    | QueueMessage
    | HeartbeatMessage
    | PongMessage
    | ProtocolErrorMessage
    | SnapshotMessage,
    Field(discriminator="type"),
]
server_message_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def parse_server_message(data: str | bytes) -> ServerMessage:
    """Validate one JSON frame sent by the server (for clients and tests)."""
    return server_message_adapter.validate_json(data)
