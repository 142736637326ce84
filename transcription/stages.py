"""The transcription app's stages, in order: what ``settings.PROGRESS["STAGES"]`` declares for it."""

from __future__ import annotations

from progress.stages import COMPLETE, QUEUED

__all__ = ["ALIGNING", "COMPLETE", "DIARIZING", "QUEUED", "STAGES", "TRANSCRIBING", "UPLOADING"]

UPLOADING = "uploading"
TRANSCRIBING = "transcribing"
ALIGNING = "aligning"
DIARIZING = "diarizing"
STAGES = (UPLOADING, QUEUED, TRANSCRIBING, ALIGNING, DIARIZING)
"""Uploading comes before the line (no job yet); the job transcribes, aligns, then diarizes."""
