"""The Django admin for tasks: status at a glance, each task's event history; retry, cancel and delete."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.timesince import timesince

from .control import cancel_task, delete_task
from .keys import make_key, revoke
from .models import ApiKey, Task, TaskEvent
from .publish import restart_task
from .signals import task_restarted
from .state import RESTARTABLE_VALUES


class TaskEventInline(admin.TabularInline):  # type: ignore[type-arg]  # not subscriptable at run time
    """Every stage change, retry and terminal frame of the task, in seq order."""

    model = TaskEvent
    fields = ("seq", "attempt", "stage", "created_at", "payload")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("seq",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Events are written by reports only."""
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at run time
    """Tasks are read here, never edited (reports change them); failed or cancelled ones can be
    retried, waiting or running ones cancelled, any deleted with everything of it."""

    list_display = ("task_id", "status", "stage", "percentage", "attempt", "age", "error_code", "updated_at")
    list_filter = ("status", "stage")
    search_fields = ("task_id", "owner", "error_code")
    ordering = ("-updated_at",)
    inlines = [TaskEventInline]
    actions = ["retry", "cancel", "delete_everything"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Every field: a task changes through reports, so its seq order holds."""
        return [field.name for field in Task._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are created by jobs and uploads."""
        return False

    @admin.display(description="age", ordering="created_at")
    def age(self, task: Task) -> str:
        """How long ago the task was created."""
        return timesince(task.created_at)

    @admin.action(description="Retry the selected failed tasks")
    def retry(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """Start a new attempt of each failed task; the app that runs its jobs queues it."""
        retried = 0
        for task_id in queryset.filter(status__in=RESTARTABLE_VALUES).values_list("task_id", flat=True):
            attempt = restart_task(task_id, "retried by an operator")
            if attempt is not None:
                task_restarted.send(sender=Task, task_id=task_id, attempt=attempt)
                retried += 1
        skipped = queryset.count() - retried
        self.message_user(
            request, f"Retried {retried} task(s); {skipped} were not failed or cancelled.", messages.INFO
        )

    @admin.action(description="Cancel the selected waiting or running tasks")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """Cancel each task that still runs; its watchers are told, its job stops."""
        ids = list(queryset.values_list("task_id", flat=True))
        cancelled = sum(cancel_task(task_id) for task_id in ids)
        self.message_user(request, f"Cancelled {cancelled} task(s); {len(ids) - cancelled} had ended.")

    @admin.action(description="Delete the selected tasks and everything of them")
    def delete_everything(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """``progress.delete_task`` for each: the app's data (files, results) goes too, and watchers
        are closed; Django's own bulk delete would leave the files behind."""
        ids = list(queryset.values_list("task_id", flat=True))
        deleted = sum(delete_task(task_id) for task_id in ids)
        self.message_user(request, f"Deleted {deleted} task(s) and everything of them.")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """The task actions, without Django's bulk delete (it would leave the tasks' files behind)."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at run time
    """Keys are listed with their last use, made here (shown once) and revoked; never edited."""

    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    fields = ("user", "name")
    actions = ["revoke_keys"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """A made key changes only by being revoked."""
        return ["user", "name"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        """Make the key, and show it once: it is not kept."""
        if change:
            return
        row, key = make_key(obj.user, obj.name)
        obj.pk = row.pk
        message = f"The new API key (shown once, copy it now): {key}"
        self.message_user(request, message, messages.WARNING)

    @admin.action(description="Revoke the selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        """Refuse each key from now on; its row stays, with its last use."""
        for row in queryset:
            revoke(row)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """Revoke, not delete: a revoked key's row tells when it was last used."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
