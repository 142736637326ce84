"""Durable task state: the current state of each task and the events a watcher must never miss."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .schemas import TaskStatus


class Task(models.Model):
    """A long job's current state; one row per task, rewritten by each accepted report."""

    task_id = models.CharField(primary_key=True, max_length=64)
    owner = models.CharField(max_length=80, blank=True, default="", db_default="", db_index=True)
    """Who may watch it without a token (see progress.access); empty: token holders only."""
    status = models.CharField(
        max_length=16,
        choices=[(s.value, s.value) for s in TaskStatus],
        default=TaskStatus.RUNNING.value,
    )
    stage = models.CharField(max_length=32)
    """One of the project's stages (``PROGRESS["STAGES"]``), or ``complete``."""
    percentage = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(null=True, blank=True)
    seq = models.PositiveBigIntegerField(default=0)
    """Raised by one for every accepted report: the order of everything about this task."""
    attempt = models.PositiveIntegerField(default=1)
    broadcast_seq = models.PositiveBigIntegerField(default=0)
    """Seq of the last message fanned out; the next one carries it as prev_seq, so gaps show."""
    broadcast_at = models.FloatField(null=True, blank=True)
    """Epoch seconds of the last progress fan-out, for coalescing across processes."""
    error_code = models.CharField(max_length=64, null=True, blank=True)
    user_message = models.TextField(null=True, blank=True)
    technical_detail = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    """Last sign of life from a job that has started; none while the task waits in a queue."""
    started_at = models.DateTimeField(null=True, blank=True)
    """When a job last claimed it: the fair queue serves first whoever started a job least recently."""

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="progress_task_liveness")]

    def __str__(self) -> str:
        return f"{self.task_id} {self.status} {self.stage} {self.percentage}% #{self.seq}"


class TaskEvent(models.Model):
    """A message no watcher may miss (stage change, completion, error, retry), as sent."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    attempt = models.PositiveIntegerField()
    stage = models.CharField(max_length=16, null=True, blank=True)
    """The stage entered, for stage changes and completion; null for errors."""
    payload = models.TextField()
    """The exact JSON frame watchers received."""
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["task", "seq"]
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="progress_event_unique_seq")]

    def __str__(self) -> str:
        return f"{self.task_id} #{self.seq} {self.stage or 'error'}"


class Tombstone(models.Model):
    """A deleted task: a digest of its id, so that a late report cannot bring the task back."""

    digest = models.CharField(primary_key=True, max_length=64)
    deleted_at = models.DateTimeField()


class ApiKey(models.Model):
    """A key a script or service sends as ``Authorization: Bearer <key>`` to act as its user.

    Only its prefix (to find it, and to tell keys apart in lists) and the SHA-256 of the whole are
    kept: the key itself is shown once, when it is made (progress.keys)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    """When it last opened a request (written at most once a minute)."""
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"


class Callback(models.Model):
    """A task's webhook: where to POST when it ends, on whose behalf (whose secret signs it)."""

    task_id = models.CharField(primary_key=True, max_length=64)
    url = models.URLField(max_length=2000)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    base_url = models.CharField(max_length=300, blank=True, default="")
    """The server's address as the uploader reached it, for the result's URL in the body."""


class WebhookSecret(models.Model):
    """The key that signs a user's webhooks (HMAC-SHA256), made on first use."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    secret = models.CharField(max_length=64)


class WebhookDelivery(models.Model):
    """The outbox: one row per event to deliver, kept until a 2xx answer or until it is given up."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        GIVEN_UP = "given_up"

    event_id = models.UUIDField(primary_key=True)
    task_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000)
    body = models.TextField()
    """The JSON sent, fixed when the event happened: every try sends the same."""
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.FloatField()
    next_at = models.FloatField(db_index=True)
    """Epoch seconds of the next try (also the lease of a try in progress)."""
    last_error = models.TextField(blank=True, default="")
