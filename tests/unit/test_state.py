"""The pure report rules: every verdict of judge_progress and judge_error."""

from __future__ import annotations

from dataclasses import replace

from progress.schemas import TaskStatus
from progress.state import Current, Verdict, judge_error, judge_progress
from tests.conftest import ALL_STAGES

RUNNING = Current(
    status=TaskStatus.RUNNING,
    attempt=1,
    stage="transcribing",
    percentage=40,
    message="chunk 4",
    broadcast_at=1000.0,
)


def _judge(
    current: Current = RUNNING,
    *,
    stage: str = "transcribing",
    percentage: int = 50,
    message: str | None = "chunk 5",
    attempt: int | None = None,
    now: float = 1010.0,
    min_interval: float = 0.1,
) -> Verdict:
    return judge_progress(
        current,
        stage=stage,
        percentage=percentage,
        message=message,
        attempt=attempt,
        now=now,
        min_interval=min_interval,
        stages=ALL_STAGES,
    )


def test_state_progress_higher_percentage_broadcasts():
    assert _judge() is Verdict.BROADCAST


def test_state_progress_next_stage_broadcasts_even_at_lower_percentage():
    assert _judge(stage="aligning", percentage=0, now=1000.01) is Verdict.BROADCAST


def test_state_progress_lower_stage_is_stale():
    assert _judge(stage="queued", percentage=100) is Verdict.STALE


def test_state_progress_lower_percentage_is_stale():
    assert _judge(percentage=39) is Verdict.STALE


def test_state_progress_identical_is_repeat():
    assert _judge(percentage=40, message="chunk 4") is Verdict.REPEAT


def test_state_progress_same_percentage_new_message_broadcasts():
    assert _judge(percentage=40, message="chunk 4b") is Verdict.BROADCAST


def test_state_progress_too_soon_coalesces():
    assert _judge(now=1000.05, min_interval=0.1) is Verdict.COALESCE


def test_state_progress_after_interval_broadcasts():
    assert _judge(now=1000.1, min_interval=0.1) is Verdict.BROADCAST


def test_state_progress_no_rate_limit_never_coalesces():
    assert _judge(now=1000.0, min_interval=0) is Verdict.BROADCAST


def test_state_progress_never_broadcast_never_coalesces():
    assert _judge(replace(RUNNING, broadcast_at=None), now=0.0) is Verdict.BROADCAST


def test_state_progress_stage_change_never_coalesces():
    assert _judge(stage="complete", percentage=100, now=1000.0) is Verdict.BROADCAST


def test_state_progress_other_attempt_is_stale():
    assert _judge(attempt=2) is Verdict.STALE


def test_state_progress_matching_attempt_broadcasts():
    assert _judge(attempt=1) is Verdict.BROADCAST


def test_state_progress_after_completion_is_final():
    done = replace(RUNNING, status=TaskStatus.COMPLETE, stage="complete", percentage=100)
    assert _judge(done) is Verdict.FINAL


def test_state_progress_after_failure_is_final():
    assert _judge(replace(RUNNING, status=TaskStatus.FAILED)) is Verdict.FINAL


def test_state_error_on_running_broadcasts():
    assert judge_error(RUNNING, attempt=None) is Verdict.BROADCAST


def test_state_error_matching_attempt_broadcasts():
    assert judge_error(RUNNING, attempt=1) is Verdict.BROADCAST


def test_state_error_other_attempt_is_stale():
    assert judge_error(RUNNING, attempt=3) is Verdict.STALE


def test_state_error_after_failure_is_final():
    assert judge_error(replace(RUNNING, status=TaskStatus.FAILED), attempt=None) is Verdict.FINAL


def test_state_error_after_completion_is_final():
    assert judge_error(replace(RUNNING, status=TaskStatus.COMPLETE), attempt=None) is Verdict.FINAL
