"""Durable task state: seqs, events, catch-up, restarts, stale and final reports, coalescing."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from progress import snapshots, store
from progress.models import Task, TaskEvent
from progress.schemas import ErrorMessage, ProgressMessage, SnapshotMessage, TaskStatus
from progress.state import Verdict
from progress.store import Outcome

pytestmark = pytest.mark.django_db

Q, T, A, D, C = (
    "queued",
    "transcribing",
    "aligning",
    "diarizing",
    "complete",
)


def progress(
    task_id: str,
    stage: str,
    pct: int,
    message: str | None = None,
    *,
    attempt: int | None = None,
    min_interval: float = 0.0,
) -> Outcome:
    return store.record_progress(task_id, stage, pct, message, attempt=attempt, min_interval=min_interval)


def error(task_id: str, code: str = "decode_failed", *, attempt: int | None = None) -> Outcome:
    return store.record_error(task_id, code, "We could not read the audio.", "trace", attempt=attempt)


def event_seqs(task_id: str) -> list[tuple[int, str | None]]:
    return list(TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("seq", "stage"))


def test_store_seq_rises_by_one_per_accepted_report():
    seqs = [progress("job1", stage, pct).seq for stage, pct in [(Q, 0), (T, 10), (T, 20), (A, 0)]]
    assert seqs == [1, 2, 3, 4]
    assert Task.objects.get(pk="job1").seq == 4


def test_store_first_report_creates_the_task():
    outcome = progress("job1", Q, 0)
    assert outcome.verdict is Verdict.BROADCAST
    assert outcome.send is not None
    assert (outcome.send["seq"], outcome.send["prev_seq"], outcome.send["final"]) == (1, 0, False)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.stage, task.heartbeat_at) == ("running", "queued", None)


def test_store_prev_seq_chains_broadcasts():
    sends = [progress("job1", stage, pct).send for stage, pct in [(Q, 0), (T, 10), (T, 20)]]
    assert [(s["prev_seq"], s["seq"]) for s in sends if s] == [(0, 1), (1, 2), (2, 3)]


def test_store_events_only_for_stage_changes():
    for stage, pct in [(Q, 0), (T, 10), (T, 20), (T, 30), (A, 5), (A, 50)]:
        progress("job1", stage, pct)
    assert event_seqs("job1") == [(1, "queued"), (2, "transcribing"), (5, "aligning")]


def test_store_event_payload_is_the_frame_sent():
    outcome = progress("job1", Q, 0, "waiting")
    assert outcome.send is not None
    assert TaskEvent.objects.get(task_id="job1", seq=1).payload == outcome.send["text"]
    assert ProgressMessage.model_validate_json(outcome.send["text"]).message == "waiting"


def test_store_completion_is_terminal_event_and_final():
    progress("job1", T, 50)
    outcome = progress("job1", C, 90)
    assert outcome.send is not None
    assert outcome.send["final"]
    assert ProgressMessage.model_validate_json(outcome.send["text"]).percentage == 100
    assert Task.objects.get(pk="job1").status == TaskStatus.COMPLETE
    assert event_seqs("job1")[-1] == (2, "complete")


def test_store_error_is_terminal_event_not_final():
    progress("job1", T, 50)
    outcome = error("job1")
    assert outcome.send is not None
    assert not outcome.send["final"]  # watchers stay for a retry
    assert ErrorMessage.model_validate_json(outcome.send["text"]).seq == 2
    assert event_seqs("job1") == [(1, "transcribing"), (2, None)]
    assert Task.objects.get(pk="job1").status == TaskStatus.FAILED


def test_store_error_for_unknown_task_creates_it_failed():
    outcome = error("job1")
    assert outcome.seq == 1
    assert Task.objects.get(pk="job1").status == TaskStatus.FAILED


def test_store_reports_after_completion_are_final():
    progress("job1", C, 100)
    assert progress("job1", C, 100).verdict is Verdict.FINAL
    assert progress("job1", D, 10).verdict is Verdict.FINAL
    assert error("job1").verdict is Verdict.FINAL
    assert Task.objects.get(pk="job1").seq == 1


def test_store_reports_after_failure_are_final():
    progress("job1", T, 10)
    error("job1")
    assert progress("job1", A, 0).verdict is Verdict.FINAL
    assert error("job1", "other").verdict is Verdict.FINAL
    assert Task.objects.get(pk="job1").error_code == "decode_failed"


def test_store_regressing_reports_not_broadcast():
    progress("job1", A, 50)
    for stage, pct in [(A, 49), (T, 90), (Q, 0)]:
        outcome = progress("job1", stage, pct)
        assert (outcome.verdict, outcome.send, outcome.seq) == (Verdict.STALE, None, 1)
    task = Task.objects.get(pk="job1")
    assert (task.stage, task.percentage, task.seq) == ("aligning", 50, 1)


def test_store_identical_report_not_broadcast():
    progress("job1", T, 50, "half")
    outcome = progress("job1", T, 50, "half")
    assert (outcome.verdict, outcome.send, outcome.seq) == (Verdict.REPEAT, None, 1)


def test_store_restart_of_failed_task():
    progress("job1", T, 30)
    error("job1")
    outcome = store.restart("job1", "retrying")
    assert outcome is not None
    assert outcome.send is not None
    message = ProgressMessage.model_validate_json(outcome.send["text"])
    assert (message.seq, message.attempt, message.stage, message.percentage) == (3, 2, Q, 0)
    task = Task.objects.get(pk="job1")
    assert (task.status, task.attempt, task.error_code) == ("running", 2, None)
    assert progress("job1", T, 5).seq == 4
    assert event_seqs("job1") == [(1, "transcribing"), (2, None), (3, "queued"), (4, "transcribing")]


def test_store_restart_only_for_failed_tasks():
    assert store.restart("nobody") is None
    progress("job1", T, 30)
    assert store.restart("job1") is None
    progress("job1", C, 100)
    assert store.restart("job1") is None
    assert Task.objects.get(pk="job1").seq == 2


def test_store_stale_attempt_ignored():
    progress("job1", T, 30, attempt=1)
    error("job1", attempt=1)
    store.restart("job1")
    assert progress("job1", D, 90, attempt=1).verdict is Verdict.STALE
    assert error("job1", attempt=1).verdict is Verdict.STALE
    assert progress("job1", T, 1, attempt=2).verdict is Verdict.BROADCAST
    task = Task.objects.get(pk="job1")
    assert (task.status, task.stage, task.attempt) == ("running", "transcribing", 2)


def test_store_heartbeat_starts_with_the_job():
    progress("job1", Q, 0)
    assert Task.objects.get(pk="job1").heartbeat_at is None
    progress("job1", T, 0)
    assert Task.objects.get(pk="job1").heartbeat_at is not None


def test_store_beat_and_stale_tasks():
    progress("job1", T, 0)
    progress("job2", Q, 0)
    assert store.beat("job1", attempt=1)
    assert not store.beat("job1", attempt=2)
    assert not store.beat("nobody")
    assert store.stale_tasks(-1) == [("job1", 1)]
    assert store.stale_tasks(3600) == []


def test_store_read_of_an_unknown_task_is_none():
    assert snapshots.read("nobody") is None


def test_store_read_after_sends_events_then_latest_progress():
    for stage, pct in [(Q, 0), (T, 10), (T, 20), (A, 0), (A, 30), (A, 40)]:
        progress("job1", stage, pct)
    view = snapshots.read("job1")
    assert view is not None
    frames = view.after(1)
    assert [seq for seq, _ in frames] == [2, 4, 6]
    assert json.loads(frames[-1][1])["percentage"] == 40
    assert (view.seq, view.final) == (6, False)


def test_store_read_after_the_latest_is_empty():
    progress("job1", Q, 0)
    progress("job1", T, 10)
    view = snapshots.read("job1")
    assert view is not None
    assert (view.after(2), view.seq, view.final) == ([], 2, False)


def test_store_read_of_a_failed_task_ends_with_its_error():
    progress("job1", T, 10)
    progress("job1", T, 20)
    error("job1")
    view = snapshots.read("job1")
    assert view is not None
    assert [seq for seq, _ in view.after(0)] == [1, 3]
    assert json.loads(view.after(0)[-1][1])["type"] == "error"
    assert view.ended
    assert not view.final  # a failed task may be retried: its watchers stay


def test_store_read_snapshot_and_terminal_frame():
    progress("job1", Q, 0)
    assert snapshots.read("job1").terminal is None  # type: ignore[union-attr]
    done = progress("job1", C, 100)
    view = snapshots.read("job1")
    assert view is not None
    snapshot = SnapshotMessage.model_validate_json(view.snapshot)
    assert (snapshot.seq, snapshot.status, [h.seq for h in snapshot.history]) == (
        2,
        TaskStatus.COMPLETE,
        [1, 2],
    )
    assert done.send is not None
    assert view.terminal == done.send["text"]


def test_store_coalescing_sends_few_and_flush_delivers_final_value():
    min_interval = 0.05
    progress("job1", T, 0, "start")
    started = time.monotonic()
    outcomes = [progress("job1", T, i // 10, f"step {i}", min_interval=min_interval) for i in range(1, 1001)]
    elapsed = time.monotonic() - started
    sends = [o.send for o in outcomes if o.send is not None]
    coalesced = [o for o in outcomes if o.verdict is Verdict.COALESCE]
    assert len(sends) + len(coalesced) == 1000
    # At most one fan-out per interval (plus the first): the rest are held back.
    assert len(sends) <= elapsed / min_interval + 2
    assert all(o.flush_at is not None and o.send is None for o in coalesced)
    flushed = store.flush("job1")
    last = flushed.send if flushed is not None and flushed.send is not None else sends[-1]
    final = ProgressMessage.model_validate_json(last["text"])
    assert (final.seq, final.percentage, final.message) == (1001, 100, "step 1000")
    assert store.flush("job1") is None


def test_store_flush_after_terminal_sends_nothing():
    progress("job1", T, 0)
    progress("job1", T, 1, min_interval=60)
    progress("job1", C, 100, min_interval=60)
    assert store.flush("job1") is None
    assert store.flush("nobody") is None


def test_store_flush_too_soon_waits_for_the_interval():
    progress("job1", T, 0)
    progress("job1", T, 1, min_interval=60)
    sent_at = Task.objects.get(pk="job1").broadcast_at
    assert sent_at is not None
    early = store.flush("job1", min_interval=60)
    assert early is not None
    assert (early.send, early.flush_at) == (None, sent_at + 60)
    assert Task.objects.get(pk="job1").broadcast_seq == 1
    due = store.flush("job1", min_interval=0.0)
    assert due is not None
    assert due.send is not None
    assert ProgressMessage.model_validate_json(due.send["text"]).percentage == 1


def test_store_progress_within_a_stage_is_two_statements():
    progress("job1", T, 10)
    with CaptureQueriesContext(connection) as queries:
        progress("job1", T, 20)
    # The locked read and the update (a test's savepoints aside): no deferred field is loaded.
    verbs = [q["sql"].split()[0] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert verbs == ["SELECT", "UPDATE"]


def test_store_progress_keeps_the_heartbeat_and_creation_time():
    progress("job1", Q, 0)
    progress("job1", T, 10)
    before = Task.objects.get(pk="job1")
    progress("job1", T, 20, "halfway")
    after = Task.objects.get(pk="job1")
    assert after.created_at == before.created_at
    assert before.heartbeat_at is not None
    assert after.heartbeat_at is not None
    assert after.heartbeat_at >= before.heartbeat_at
    assert (after.seq, after.percentage, after.message) == (3, 20, "halfway")
