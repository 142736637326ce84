"""The audio app's limits, read from Django settings (each also from the environment, in settings.py)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    """What one upload and one task may cost."""

    max_upload_bytes: int
    max_audio_seconds: float
    upload_idle_timeout: float
    max_attempts: int
    keep_failed_audio: float
    uploads_per_minute: int
    """New uploads (or reservations) one owner, and one client address, may start in any 60 s."""
    max_owner_bytes: int
    """Bytes of uploaded audio one owner may have stored at once (waiting or running jobs' files)."""
    max_bytes_per_day: int
    upload_chunk_bytes: int
    """The most one request of a resumable upload (tus PATCH) may carry."""
    upload_expiry: float
    """Seconds an unfinished resumable upload is kept; then its bytes go and its task fails."""
    """Bytes one owner (a user, whatever key or browser it uses) may upload in any 24 hours."""
    reservation_ttl: float
    """Seconds a reserved task waits for its upload before it fails as ``upload_expired``."""
    keep_results: float
    """Seconds an ended task (its transcript, its history) is kept; 0 keeps them for ever."""


def limits() -> Limits:
    """The limits in force now (read each time: tests override settings)."""
    return Limits(
        max_upload_bytes=int(getattr(settings, "TRANSCRIPTION_MAX_UPLOAD_BYTES", 200 * 1024 * 1024)),
        max_audio_seconds=float(getattr(settings, "TRANSCRIPTION_MAX_AUDIO_SECONDS", 4 * 3600)),
        upload_idle_timeout=float(getattr(settings, "TRANSCRIPTION_UPLOAD_IDLE_TIMEOUT", 30)),
        max_attempts=int(getattr(settings, "TRANSCRIPTION_MAX_ATTEMPTS", 3)),
        keep_failed_audio=float(getattr(settings, "TRANSCRIPTION_KEEP_FAILED_AUDIO", 24 * 3600)),
        uploads_per_minute=int(getattr(settings, "TRANSCRIPTION_UPLOADS_PER_MINUTE", 20)),
        max_owner_bytes=int(getattr(settings, "TRANSCRIPTION_MAX_OWNER_BYTES", 2 * 1024**3)),
        max_bytes_per_day=int(getattr(settings, "TRANSCRIPTION_MAX_BYTES_PER_DAY", 20 * 1024**3)),
        upload_chunk_bytes=int(getattr(settings, "TRANSCRIPTION_UPLOAD_CHUNK_BYTES", 8 * 1024**2)),
        upload_expiry=float(getattr(settings, "TRANSCRIPTION_UPLOAD_EXPIRY", 24 * 3600)),
        reservation_ttl=float(getattr(settings, "TRANSCRIPTION_RESERVATION_TTL", 3600)),
        keep_results=float(getattr(settings, "TRANSCRIPTION_KEEP_RESULTS", 30 * 24 * 3600)),
    )
