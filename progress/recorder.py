"""What a long job holds while it runs: heartbeats, progress, and a reported end however it ends."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from django.db import close_old_connections, connection

from . import store
from .conf import get_settings
from .models import Task
from .publish import report_error, report_progress
from .schemas import TaskStatus, utcnow
from .stages import COMPLETE

log = logging.getLogger("progress")

__all__ = ["Job", "JobCancelled", "JobFailed", "claim", "track"]

CHECK_INTERVAL = 0.25
"""Seconds between two reads of a job's task by ``Job.check()``: how soon a cancel stops a job."""
_USER_MESSAGE_MAX = 500
_DETAIL_MAX = 10_000


class JobFailed(Exception):
    """Raised by a job body to fail its task with a chosen code and message for the user."""

    def __init__(self, error_code: str, user_message: str, technical_detail: str | None = None) -> None:
        super().__init__(user_message)
        self.error_code = error_code
        self.user_message = user_message
        self.technical_detail = technical_detail


class JobCancelled(Exception):
    """Raised by ``Job.check()`` once the attempt was taken away: the job stops without reporting."""


class Job:
    """One attempt of a task while it runs; a context manager that heartbeats and reports its end."""

    def __init__(
        self,
        task_id: str,
        attempt: int,
        *,
        beat_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.beat_interval = beat_interval if beat_interval is not None else get_settings().STALE_AFTER / 4
        self._clock = clock
        self._checked_at = clock()
        self._cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: Any = None
        self._has_result = False

    @property
    def cancelled(self) -> bool:
        """True once this attempt no longer owns the task (failed by the reaper, retried, ended)."""
        return self._cancelled.is_set()

    @property
    def result(self) -> Any:
        """What the body produced; setting it makes the job report ``complete`` when the body ends."""
        return self._result

    @result.setter
    def result(self, value: Any) -> None:
        self._result = value
        self._has_result = True

    def check(self) -> None:
        """Raise JobCancelled if this attempt no longer owns the task (cancelled, deleted, failed by the
        reaper, retried), so a job stops wasted work. Call it between units of work: it reads the
        task at most every CHECK_INTERVAL seconds."""
        now = self._clock()
        if not self.cancelled and now - self._checked_at >= CHECK_INTERVAL:
            self._checked_at = now
            try:
                if not store.still_running(self.task_id, self.attempt):
                    self._cancelled.set()
            except Exception:  # the database away: the heartbeat thread decides
                log.exception("progress: job %s could not check its task", self.task_id)
                close_old_connections()
        if self.cancelled:
            raise JobCancelled(f"task {self.task_id} attempt {self.attempt} was cancelled")

    def progress(self, stage: str, percentage: float, message: str | None = None) -> bool:
        """Report this attempt's progress; True if it changed the task. Never raises."""
        try:
            return report_progress(self.task_id, stage, percentage, message, attempt=self.attempt)
        except Exception:
            log.exception("progress: job %s could not report progress", self.task_id)
            return False

    def fail(self, error_code: str, user_message: str, technical_detail: str | None = None) -> bool:
        """Fail this attempt's task; True if that ended it. Never raises."""
        try:
            return report_error(
                self.task_id,
                error_code,
                user_message[:_USER_MESSAGE_MAX],
                technical_detail[-_DETAIL_MAX:] if technical_detail else None,
                attempt=self.attempt,
            )
        except Exception:
            log.exception("progress: job %s could not report its failure", self.task_id)
            return False

    def __enter__(self) -> Job:
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"progress-heartbeat-{self.task_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc is None:
            if self._has_result and not self.cancelled:
                self.progress(COMPLETE, 100)
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit: the process is going; the reaper reports it
        if isinstance(exc, JobCancelled):
            log.info("progress: job %s attempt %s stopped: cancelled", self.task_id, self.attempt)
            return True
        detail = "".join(traceback.format_exception(kind, exc, tb))
        if isinstance(exc, JobFailed):
            log.warning("progress: job %s failed: %s", self.task_id, exc.user_message)
            self.fail(exc.error_code, exc.user_message, exc.technical_detail or detail)
        else:
            log.error("progress: job %s raised\n%s", self.task_id, detail)
            self.fail("job_failed", "The job failed unexpectedly.", detail)
        # Reported to the watchers: the exception ends here, so a queue does not redeliver the job.
        return True

    def _heartbeat(self) -> None:
        """Tell the store this attempt is alive until the body ends or the attempt is taken away."""
        try:
            while not self._stop.wait(self.beat_interval):
                try:
                    alive = store.beat(self.task_id, self.attempt)
                except Exception:
                    log.exception("progress: job %s could not record a heartbeat", self.task_id)
                    close_old_connections()
                    continue
                if not alive:
                    log.warning("progress: job %s attempt %s was cancelled", self.task_id, self.attempt)
                    self._cancelled.set()
                    return
        finally:
            connection.close()


def track(task_id: str, attempt: int, *, beat_interval: float | None = None) -> Job:
    """A job for ``task_id``'s ``attempt``, without claiming it: ``with track(...) as job:``."""
    return Job(task_id, attempt, beat_interval=beat_interval)


def claim(task_id: str, attempt: int, *, beat_interval: float | None = None) -> Job | None:
    """Take a queued attempt for this process, once; None if it was failed, retried or taken already."""
    # A queued task has no heartbeat yet; setting it is the claim, so a redelivered message that
    # arrives after a worker died (or after a retry started a new attempt) finds nothing to do.
    now = utcnow()
    claimed = Task.objects.filter(
        task_id=task_id,
        attempt=attempt,
        status=TaskStatus.RUNNING.value,
        heartbeat_at__isnull=True,
    ).update(heartbeat_at=now, started_at=now)
    if claimed != 1:
        log.info("progress: task %s attempt %s is not waiting to run; skipped", task_id, attempt)
        return None
    return Job(task_id, attempt, beat_interval=beat_interval)
