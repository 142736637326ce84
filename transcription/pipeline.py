"""Transcribe one audio file, reporting its progress stage by stage: the job runner's single entry point."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audio import AudioError, AudioTooLong, PcmAudio, check_file, open_pcm16k
from .engines import Segment, Utterance, Word, load_diarizer, load_engine
from .stages import ALIGNING, DIARIZING, TRANSCRIBING

__all__ = [
    "AudioError",
    "AudioTooLong",
    "ProgressCallback",
    "Segment",
    "Transcript",
    "Word",
    "transcribe_file",
]

log = logging.getLogger(__name__)

CHUNK_SECONDS = 0.5
"""Audio fed to the recogniser between two progress checks."""

ProgressCallback = Callable[[str, int, str | None], None]
"""Told (stage, percentage 0-100, message); an exception it raises aborts the transcription."""


@dataclass(frozen=True)
class Transcript:
    """What a transcription produces: the text, speaker segments and word timings."""

    text: str
    segments: list[Segment]
    words: list[Word]

    def to_json(self) -> dict[str, Any]:
        """The result document served to clients."""
        return {
            "text": self.text,
            "segments": [
                {"start": s.start, "end": s.end, "text": s.text, "speaker": s.speaker} for s in self.segments
            ],
            "words": [{"word": w.word, "start": w.start, "end": w.end} for w in self.words],
        }


class _StageReporter:
    """Reports one stage's percentage, only when it rises, so a long file does not flood the channel."""

    def __init__(self, on_progress: ProgressCallback, stage: str) -> None:
        self.on_progress = on_progress
        self.stage = stage
        self.last = -1

    def __call__(self, fraction: float, message: str | None = None, *, cap: int = 100) -> None:
        percentage = min(cap, max(0, int(fraction * 100)))
        if percentage > self.last:
            self.last = percentage
            self.on_progress(self.stage, percentage, message)

    def step(self, fraction: float) -> None:
        """A StepProgress for engines."""
        self(fraction)


def transcribe_file(
    path: Path,
    on_progress: ProgressCallback,
    *,
    engine: str | None = None,
    max_seconds: float | None = None,
    workdir: Path | None = None,
    check: Callable[[], None] | None = None,
) -> Transcript:
    """Decode, recognise, align and diarize ``path``; AudioError if it is not audio we can decode.

    Reports TRANSCRIBING (percentage = audio processed), ALIGNING, then DIARIZING, each from 0 to 100.
    ``engine`` is a dotted path overriding ``settings.TRANSCRIPTION_ENGINE``; past ``max_seconds`` the
    decode stops (AudioTooLong); ``workdir`` holds the decoded samples meanwhile. ``check`` is called
    between units of work (decoded blocks, recognised chunks); an exception it raises stops the work.
    """
    path = Path(path)
    check_file(path)  # refuse non-audio before reporting anything
    recogniser = load_engine(engine)
    diarizer = load_diarizer()
    transcribing = _StageReporter(on_progress, TRANSCRIBING)
    transcribing(0.0, "decoding audio")  # converting a long compressed file takes a while
    check = check or _nothing
    with open_pcm16k(path, max_seconds=max_seconds, workdir=workdir, check=check) as audio:
        utterances = _recognise(audio, recogniser.feed, recogniser.finish, transcribing, check)

        aligning = _StageReporter(on_progress, ALIGNING)
        aligning(0.0)
        utterances = recogniser.align(audio, utterances, aligning.step) if utterances else []
        aligning(1.0)

        diarizing = _StageReporter(on_progress, DIARIZING)
        diarizing(0.0)
        segments = diarizer.diarize(audio, utterances, diarizing.step) if utterances else []
        diarizing(1.0)

    words = [w for u in utterances for w in u.words]
    return Transcript(" ".join(s.text for s in segments), segments, words)


def _nothing() -> None:
    return None


def _recognise(
    audio: PcmAudio,
    feed: Callable[[bytes], None],
    finish: Callable[[], list[Utterance]],
    transcribing: _StageReporter,
    check: Callable[[], None],
) -> list[Utterance]:
    """Feed the audio chunk by chunk, reporting how much of it has been heard."""
    total = audio.duration
    transcribing(0.0, f"0.0 s of {total:.1f} s")
    started, done = time.monotonic(), 0
    for chunk in audio.chunks(CHUNK_SECONDS):
        check()
        feed(chunk)
        done += len(chunk)
        heard = done / audio.nbytes
        # 100 only once the recogniser has finished its last utterance.
        transcribing(heard, f"{heard * total:.1f} s of {total:.1f} s", cap=99)
    utterances = finish()
    transcribing(1.0, f"{total:.1f} s of {total:.1f} s")
    elapsed = time.monotonic() - started
    log.info("recognised %.1f s of audio in %.1f s (%.2f x real time)", total, elapsed, elapsed / total)
    return utterances
