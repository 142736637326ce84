"""What the transcription app stores beside the progress state: the upload and its transcript."""

from __future__ import annotations

from django.db import models


class Transcription(models.Model):
    """One uploaded audio file and, once its job completes, the transcript; keyed by the task id."""

    task_id = models.CharField(primary_key=True, max_length=64)
    audio_path = models.CharField(max_length=500, blank=True)
    """The upload, relative to MEDIA_ROOT; emptied once the transcript is stored and the file removed."""
    original_name = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    duration = models.FloatField(null=True, blank=True)
    """Seconds of audio, read from the upload's header when it arrives (None if it does not say)."""
    result = models.JSONField(null=True, blank=True)
    """The transcript: {"text", "segments", "words"}."""
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.task_id} {self.original_name} {'done' if self.result is not None else 'pending'}"


class Hit(models.Model):
    """One counted action of a client (an upload, a failed login) for transcription.throttle's windows."""

    key = models.CharField(max_length=64)
    """What was counted, as ``<kind>:<digest>`` (see throttle.key)."""
    at = models.FloatField()
    """When, in epoch seconds."""
    amount = models.BigIntegerField(default=1)
    """How much it counts: 1 for an action, its size for bytes against a budget."""

    class Meta:
        indexes = [models.Index(fields=["key", "at"], name="transcription_hit_key_at")]


class Upload(models.Model):
    """A resumable upload (tus, ``transcription.tus``): its task, how much has arrived, until when."""

    upload_id = models.CharField(primary_key=True, max_length=40)
    task_id = models.CharField(max_length=64, unique=True)
    owner = models.CharField(max_length=80, db_index=True)
    length = models.PositiveBigIntegerField()
    offset = models.PositiveBigIntegerField(default=0)
    """Bytes stored so far: where the next chunk must start."""
    filename = models.CharField(max_length=255, blank=True, default="")
    created_at = models.FloatField()
    expires_at = models.FloatField(db_index=True)
