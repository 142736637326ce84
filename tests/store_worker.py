"""Store operations for a child process against the database DATABASE_URL names; results as JSON on stdout.

``python -m tests.store_worker report TASK_ID COUNT GO_FILE WORKER``: COUNT progress reports once GO_FILE
exists (GO_FILE.WORKER.ready says the worker is connected and waiting).
``python -m tests.store_worker script TASK_ID``: the scripted sequence of ``scripted`` and what it left.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

RUN_STAGES = ("transcribing", "aligning", "diarizing")


def report(task_id: str, count: int, go_file: Path, worker: int) -> list[dict[str, Any]]:
    """COUNT reports rising through the run stages, the last of several ``complete``; each one's outcome."""
    from django.db import connection

    from progress import store

    connection.ensure_connection()  # connect before the start line, so every worker races the first write
    Path(f"{go_file}.{worker}.ready").touch()
    while not go_file.exists():
        time.sleep(0.001)
    outcomes = []
    for i in range(count):
        stage = "complete" if i == count - 1 > 0 else RUN_STAGES[i * 3 // count]
        message = f"worker {worker} report {i}"
        outcome = store.record_progress(
            task_id, stage, i * 100 // count, message, attempt=None, min_interval=0
        )
        send = outcome.send
        outcomes.append(
            {
                "verdict": outcome.verdict.value,
                "seq": outcome.seq,
                "stage": stage,
                "prev_seq": send["prev_seq"] if send else None,
                "final": send["final"] if send else None,
            }
        )
    return outcomes


def normalized(value: Any) -> Any:
    """A JSON-like value with every UTC timestamp replaced by "<utc>" (they differ run to run)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return "<utc>" if parsed.utcoffset() == timedelta(0) else value
    return value


def scripted(task_id: str) -> dict[str, Any]:
    """Every kind of write (stale, repeat, coalesced, error, retry, completion, late reports), with
    each outcome and the snapshot and catch-ups after it, timestamps normalized."""
    from progress import snapshots, store
    from progress.schemas import SnapshotMessage
    from progress.store import Outcome

    def progress(stage: str, pct: int, message: str | None = None, **kw: Any) -> Outcome:
        options = {"attempt": None, "min_interval": 0.0, **kw}
        return store.record_progress(task_id, stage, pct, message, **options)

    def error(code: str) -> Outcome:
        return store.record_error(task_id, code, "It failed.", "detail", attempt=None)

    steps: list[tuple[str, Callable[[], Outcome | bool | None]]] = [
        ("upload", lambda: progress("uploading", 0, "uploading")),
        ("queue", lambda: progress("queued", 0)),
        ("t10", lambda: progress("transcribing", 10, "start")),
        ("t20", lambda: progress("transcribing", 20, "more")),
        ("lower percentage", lambda: progress("transcribing", 5)),
        ("lower stage", lambda: progress("queued", 0)),
        ("repeat", lambda: progress("transcribing", 20, "more")),
        ("coalesced", lambda: progress("transcribing", 30, min_interval=3600)),
        ("flush too soon", lambda: store.flush(task_id, 3600)),
        ("flush", lambda: store.flush(task_id, 0)),
        ("align", lambda: progress("aligning", 50)),
        ("error", lambda: error("engine.crash")),
        ("after error", lambda: progress("diarizing", 80)),
        ("second error", lambda: error("again")),
        ("beat failed", lambda: store.beat(task_id)),
        ("restart", lambda: store.restart(task_id, "retrying")),
        ("old attempt", lambda: progress("transcribing", 10, attempt=1)),
        ("new attempt", lambda: progress("transcribing", 10, attempt=2)),
        ("beat old attempt", lambda: store.beat(task_id, 1)),
        ("beat", lambda: store.beat(task_id, 2)),
        ("complete", lambda: progress("complete", 0, "done")),
        ("after complete", lambda: progress("diarizing", 90)),
        ("error after complete", lambda: error("late")),
        ("restart after complete", lambda: store.restart(task_id)),
        ("flush after complete", lambda: store.flush(task_id, 0)),
    ]
    results = []
    for name, step in steps:
        outcome = step()
        if isinstance(outcome, Outcome):
            # "at" (the hand-off's epoch seconds) differs run to run: whether it is there is compared.
            send = (
                dict(outcome.send, text=json.loads(outcome.send["text"]), at=outcome.send["at"] > 0)
                if outcome.send
                else None
            )
            shown: Any = {"verdict": outcome.verdict.value, "seq": outcome.seq, "send": send}
            shown["flush_at"] = outcome.flush_at is not None
        else:
            shown = outcome
        view = snapshots.read(task_id)
        snap = SnapshotMessage.model_validate_json(view.snapshot) if view else None
        seq = view.seq if view else 0
        after = {
            n: view and [view.seq, view.final, [[s, json.loads(t)] for s, t in view.after(n)]]
            for n in sorted({0, max(seq - 2, 0), seq, seq + 5})
        }
        results.append(
            {
                "step": name,
                "outcome": shown,
                "snapshot": snap and snap.model_dump(mode="json"),
                "catch_up": after,
                "terminal": json.loads(view.terminal or "null") if view else None,
            }
        )
    return {"steps": normalized(results), "unknown": [snapshots.read("nobody")]}


def main(argv: list[str]) -> None:
    """Run one mode and print its result as JSON."""
    import django

    django.setup()
    if argv[0] == "report":
        result: Any = report(argv[1], int(argv[2]), Path(argv[3]), int(argv[4]))
    elif argv[0] == "script":
        result = scripted(argv[1])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}: report or script")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
