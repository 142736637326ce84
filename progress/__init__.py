"""Push the progress of long background jobs to browsers over Django Channels.

Jobs call ``report_progress`` / ``report_error`` (or their async twins); the task's state is
stored, then fanned out to every WebSocket watching ``/ws/tasks/<task_id>/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .access import watch_token
    from .control import acancel_task, adelete_task, cancel_task, delete_task
    from .publish import (
        areport_error,
        areport_progress,
        arestart_task,
        astart_task,
        report_error,
        report_progress,
        restart_task,
        start_task,
    )
    from .recorder import Job, JobCancelled, JobFailed, claim, track

_RECORDER = ("Job", "JobCancelled", "JobFailed", "claim", "track")
_CONTROL = ("acancel_task", "adelete_task", "cancel_task", "delete_task")

__all__ = [
    "Job",
    "JobCancelled",
    "JobFailed",
    "acancel_task",
    "adelete_task",
    "areport_error",
    "areport_progress",
    "arestart_task",
    "astart_task",
    "cancel_task",
    "claim",
    "delete_task",
    "report_error",
    "report_progress",
    "restart_task",
    "start_task",
    "track",
    "watch_token",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: the publishing API needs models, which need the app registry ready.
    if name == "watch_token":
        from .access import watch_token

        return watch_token
    if name in _RECORDER:
        from . import recorder

        return getattr(recorder, name)
    if name in _CONTROL:
        from . import control

        return getattr(control, name)
    if name in __all__:
        from . import publish

        return getattr(publish, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
