"""Signals other apps connect to: the progress app runs no jobs itself."""

from __future__ import annotations

from django.dispatch import Signal

task_restarted = Signal()
"""Sent (``task_id``, ``attempt``) when an operator retries a failed task from the admin: the app that
runs the task's jobs queues the new attempt."""

task_deleted = Signal()
"""Sent (``task_id``) when a task is deleted (``progress.delete_task``), before its row goes: the app
that stores the task's data (files, results) deletes it. An exception keeps the task."""
