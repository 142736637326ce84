"""``python -m bench.store [--calls N]``: the store's write path alone, in one process, on SQLite.

Prints CPU microseconds per call of each transaction a job's reports run: a broadcast report (a new
percentage, sent at once), a coalesced one (held back by the rate limit), and a stage change (which
also stores an event). No server, no channel layer: what ``progress.store`` itself costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def setup(directory: Path) -> None:
    """Django on a new SQLite database in ``directory``, migrated."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="transcribe_project.settings",
        DATABASE_URL=f"sqlite:///{directory / 'store.sqlite3'}",
        DATA_DIR=str(directory),
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-store-only"),
        DEBUG="0",
        REDIS_URL="",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def per_call(calls: int, body: Callable[[int], object]) -> float:
    """CPU microseconds per call of ``body(i)``, after a warm-up."""
    for i in range(calls, calls + 50):
        body(i)
    start = time.process_time()
    for i in range(calls):
        body(i)
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        setup(Path(directory))
        from progress import store

        queued = ["t-sent", "t-held", *(f"t-stage-{i}" for i in range(args.calls + 50))]
        for task_id in queued:
            store.record_progress(task_id, "queued", 0, None, attempt=None, min_interval=0)
        rows = {
            "broadcast report": per_call(
                args.calls,
                lambda i: store.record_progress(
                    "t-sent", "transcribing", 50, f"chunk {i}", attempt=None, min_interval=0
                ),
            ),
            "coalesced report": per_call(
                args.calls,
                lambda i: store.record_progress(
                    "t-held", "transcribing", 50, f"chunk {i}", attempt=None, min_interval=3600
                ),
            ),
            "stage change": per_call(
                args.calls,
                lambda i: store.record_progress(
                    f"t-stage-{i}", "transcribing", 1, None, attempt=None, min_interval=0
                ),
            ),
        }
    # Each call changes the task (a new message), so none is dropped as a repeat or as stale.
    print(f"store on SQLite, {args.calls} calls each, CPU µs per call (python {sys.version.split()[0]})")
    for name, micros in rows.items():
        print(f"{name:<20} {micros:8.1f}")


if __name__ == "__main__":
    main()
