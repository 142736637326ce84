"""Reading tasks: what the views, the apps that run jobs and their housekeeping use instead of the
model, so that the table stays this app's to change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .models import Task
from .schemas import TaskStatus

__all__ = ["TaskInfo", "exists", "get", "select"]

_FIELDS = (
    "task_id",
    "owner",
    "status",
    "stage",
    "percentage",
    "attempt",
    "error_code",
    "heartbeat_at",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class TaskInfo:
    """A task as it stands: who owns it, where it is, how it ended."""

    task_id: str
    owner: str
    status: str
    stage: str
    percentage: int
    attempt: int
    error_code: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def running(self) -> bool:
        """Not ended: waiting, or a job works on it."""
        return self.status == TaskStatus.RUNNING.value

    @property
    def claimed(self) -> bool:
        """A job has started on this attempt (its heartbeat runs)."""
        return self.heartbeat_at is not None


def get(task_id: str) -> TaskInfo | None:
    """The task, or None when there is no such task."""
    row = Task.objects.filter(pk=task_id).values_list(*_FIELDS).first()
    return TaskInfo(*row) if row is not None else None


def exists(task_id: str) -> bool:
    """Whether the task exists (it was not deleted)."""
    return Task.objects.filter(pk=task_id).exists()


def select(
    *,
    ids: Iterable[str] | None = None,
    owners: Iterable[str] | None = None,
    status: str | Iterable[str] | None = None,
    stage: str | None = None,
    claimed: bool | None = None,
    updated_before: datetime | None = None,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[TaskInfo]:
    """The tasks that match every given condition (``status`` one or several), oldest first unless
    ``newest_first``; at most ``limit``."""
    rows = Task.objects.all()
    if ids is not None:
        rows = rows.filter(task_id__in=list(ids))
    if owners is not None:
        rows = rows.filter(owner__in=list(owners))
    if isinstance(status, str):
        rows = rows.filter(status=status)
    elif status is not None:
        rows = rows.filter(status__in=list(status))
    if stage is not None:
        rows = rows.filter(stage=stage)
    if claimed is not None:
        rows = rows.filter(heartbeat_at__isnull=not claimed)
    if updated_before is not None:
        rows = rows.filter(updated_at__lt=updated_before)
    rows = rows.order_by("-created_at" if newest_first else "created_at")
    found = rows.values_list(*_FIELDS)
    return [TaskInfo(*row) for row in (found[:limit] if limit is not None else found)]
