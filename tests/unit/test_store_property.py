"""Property: any sequence of reports, errors, restarts and flushes keeps the store's invariants."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from progress import snapshots, store
from progress.models import Task, TaskEvent
from progress.schemas import SnapshotMessage, TaskStatus
from progress.state import Verdict
from progress.store import GroupMessage
from tests.conftest import ALL_STAGES

pytestmark = pytest.mark.django_db

_task_ids = itertools.count()
_attempts = st.one_of(st.none(), st.integers(1, 3))
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("progress"),
            st.sampled_from(list(ALL_STAGES.names)),
            st.integers(0, 100),
            st.sampled_from([None, "a", "b"]),
            _attempts,
            st.sampled_from([0.0, 3600.0]),
        ),
        st.tuples(st.just("error"), _attempts),
        st.tuples(st.just("restart")),
        st.tuples(st.just("flush")),
    ),
    min_size=1,
    max_size=30,
)


def _apply(task_id: str, op: tuple[Any, ...]) -> tuple[bool, GroupMessage | None]:
    """Run one op; whether it changed the task, and what it would fan out."""
    if op[0] == "progress":
        _, stage, pct, message, attempt, min_interval = op
        outcome = store.record_progress(
            task_id, stage, pct, message, attempt=attempt, min_interval=min_interval
        )
        return outcome.verdict in (Verdict.BROADCAST, Verdict.COALESCE), outcome.send
    if op[0] == "error":
        outcome = store.record_error(task_id, "oops", "failed", None, attempt=op[1])
        return outcome.verdict is Verdict.BROADCAST, outcome.send
    if op[0] == "restart":
        restarted = store.restart(task_id)
        return restarted is not None, restarted.send if restarted else None
    flushed = store.flush(task_id)
    return False, flushed.send if flushed else None


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=ops)
def test_store_property_invariants(script):
    task_id = f"sp{next(_task_ids)}"
    accepted, sent = 0, []
    for op in script:
        changed, send = _apply(task_id, op)
        accepted += changed
        if send is not None:
            sent.append(send)
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        assert accepted == 0
        return
    # Seqs: one per accepted report, none reused; fan-outs chain through prev_seq in seq order.
    assert task.seq == accepted
    assert [m["seq"] for m in sent] == sorted({m["seq"] for m in sent})
    assert [m["prev_seq"] for m in sent] == [0] + [m["seq"] for m in sent[:-1]]
    assert task.broadcast_seq == (sent[-1]["seq"] if sent else 0)
    # Events: increasing seqs, exact frames, stages never backwards within an attempt, ends are final.
    events = list(TaskEvent.objects.filter(task_id=task_id).order_by("seq"))
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert all(json.loads(e.payload)["seq"] == e.seq for e in events)
    for attempt, group in itertools.groupby(events, key=lambda e: e.attempt):
        stages = [ALL_STAGES.rank(e.stage) for e in group if e.stage is not None]
        assert stages == sorted(stages), f"attempt {attempt} went backwards"
    ends = [i for i, e in enumerate(events) if e.stage in (None, "complete")]
    for i in ends:
        after = events[i + 1 : i + 2]
        assert not after or (after[0].stage == "queued" and events[i].stage is None)
    if task.status != TaskStatus.RUNNING.value:
        assert events[-1].seq == task.seq
    # The view (what a watcher or poller is sent) agrees with the rows.
    view = snapshots.read(task_id)
    assert view is not None
    snapshot = SnapshotMessage.model_validate_json(view.snapshot)
    assert (snapshot.seq, snapshot.attempt, snapshot.status.value) == (task.seq, task.attempt, task.status)
    assert [h.seq for h in snapshot.history] == [e.seq for e in events if e.stage is not None]
    assert (view.seq, view.final) == (task.seq, task.status == TaskStatus.COMPLETE.value)
    for seen in range(task.seq + 1):
        seqs = [seq for seq, _ in view.after(seen)]
        assert seqs == sorted(set(seqs))
        assert {e.seq for e in events if e.seq > seen} <= set(seqs)
        assert all(seq > seen for seq in seqs)
        assert not seqs or seqs[-1] == task.seq
