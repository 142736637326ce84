"""The wire models: invalid values are rejected, timestamps are ISO 8601, every frame round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from progress.schemas import (
    ErrorMessage,
    HeartbeatMessage,
    PongMessage,
    ProgressMessage,
    ProtocolErrorCode,
    ProtocolErrorMessage,
    SnapshotMessage,
    StageTransition,
    TaskError,
    TaskStatus,
    parse_server_message,
)
from tests.conftest import ALL_STAGES

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize("percentage", [101, -1, 50.5, "50", True])
def test_schemas_progress_rejects_bad_percentage(percentage):
    with pytest.raises(ValidationError):
        ProgressMessage(task_id="job1", stage="queued", percentage=percentage)


@pytest.mark.parametrize("percentage", [0, 100])
def test_schemas_progress_accepts_bounds(percentage):
    assert ProgressMessage(task_id="job1", stage="queued", percentage=percentage).percentage == percentage


@pytest.mark.parametrize("stage", ["", "Sleeping", "two words", "x" * 33, "1st"])
def test_schemas_progress_rejects_a_malformed_stage_name(stage):
    with pytest.raises(ValidationError):
        ProgressMessage(task_id="job1", stage=stage, percentage=0)


def test_schemas_any_projects_stage_parses_for_clients():
    # Which stages exist is the project's (checked where reports come in): a client reads them all.
    assert ProgressMessage(task_id="job1", stage="rendering", percentage=5).stage == "rendering"


@pytest.mark.parametrize("task_id", ["", "bad id", "a/b", "x" * 65, "é"])
def test_schemas_progress_rejects_bad_task_id(task_id):
    with pytest.raises(ValidationError):
        ProgressMessage(task_id=task_id, stage="queued", percentage=0)


def test_schemas_progress_rejects_extra_fields():
    with pytest.raises(ValidationError):
        ProgressMessage.model_validate({"task_id": "j", "stage": "queued", "percentage": 0, "extra": 1})


@pytest.mark.parametrize("code", ["", "Has Caps", "x" * 65, "semi;colon"])
def test_schemas_error_rejects_bad_error_code(code):
    with pytest.raises(ValidationError):
        ErrorMessage(task_id="job1", error_code=code, user_message="failed")


def test_schemas_error_rejects_empty_user_message():
    with pytest.raises(ValidationError):
        ErrorMessage(task_id="job1", error_code="decode_failed", user_message="")


def test_schemas_stage_order_is_the_pipeline():
    ranks = [ALL_STAGES.rank(stage) for stage in ALL_STAGES.names]
    assert ranks == sorted(ranks)
    assert ALL_STAGES.rank("queued") < ALL_STAGES.rank("complete")


def test_schemas_timestamps_are_iso8601_on_the_wire():
    frame = json.loads(
        ProgressMessage(task_id="j", stage="queued", percentage=0, timestamp=WHEN).model_dump_json()
    )
    assert frame["timestamp"] == "2026-01-02T03:04:05.678000Z"
    assert datetime.fromisoformat(frame["timestamp"]) == WHEN


def test_schemas_default_timestamp_is_timezone_aware():
    assert HeartbeatMessage().timestamp.tzinfo is not None


def test_schemas_percentage_is_an_integer_on_the_wire():
    frame = json.loads(ProgressMessage(task_id="j", stage="queued", percentage=7).model_dump_json())
    assert frame["percentage"] == 7
    assert isinstance(frame["percentage"], int)


def _every_server_message() -> list[BaseModel]:
    return [
        ProgressMessage(task_id="j", seq=3, stage="aligning", percentage=40, message="m", timestamp=WHEN),
        ErrorMessage(
            task_id="j",
            seq=4,
            error_code="decode_failed",
            user_message="u",
            technical_detail="t",
            timestamp=WHEN,
        ),
        HeartbeatMessage(timestamp=WHEN),
        PongMessage(timestamp=WHEN),
        ProtocolErrorMessage(code=ProtocolErrorCode.MALFORMED_JSON, detail="bad", timestamp=WHEN),
        SnapshotMessage(
            task_id="j",
            seq=5,
            attempt=2,
            status=TaskStatus.FAILED,
            stage="transcribing",
            percentage=12,
            error=TaskError(error_code="oom", user_message="u"),
            history=[StageTransition(seq=1, attempt=1, stage="queued", timestamp=WHEN)],
            created_at=WHEN,
            timestamp=WHEN,
        ),
    ]


@pytest.mark.parametrize("message", _every_server_message(), ids=lambda m: type(m).__name__)
def test_schemas_parse_server_message_round_trips(message):
    parsed = parse_server_message(message.model_dump_json())
    assert type(parsed) is type(message)
    assert parsed == message


def test_schemas_parse_server_message_rejects_unknown_type():
    with pytest.raises(ValidationError):
        parse_server_message('{"type": "nope"}')
