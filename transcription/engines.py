"""Pluggable speech engines: a recogniser (with word alignment) and a diarizer, chosen by settings.

``settings.TRANSCRIPTION_ENGINE`` (dotted path to an ``Engine`` subclass, default the PocketSphinx one) and
``settings.TRANSCRIPTION_DIARIZER`` (dotted path to a ``Diarizer``; the default labels every segment as
the single speaker ``SPEAKER_1``: it does no real diarization). Both are built anew for each file, so an
engine needs no locking when several jobs run in one process.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .audio import BYTES_PER_SECOND, SAMPLE_RATE, PcmAudio

DEFAULT_ENGINE = "transcription.engines.PocketSphinxEngine"
DEFAULT_DIARIZER = "transcription.engines.SingleSpeakerDiarizer"
SINGLE_SPEAKER = "SPEAKER_1"

StepProgress = Callable[[float], None]
"""Told the fraction (0..1) of the current step that is done."""


@dataclass(frozen=True)
class Word:
    """One recognised word and when it was spoken, in seconds from the start of the file."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech by one speaker."""

    start: float
    end: float
    text: str
    speaker: str


@dataclass(frozen=True)
class Utterance:
    """A stretch of speech between pauses, as recognised: its text and words (times in file seconds)."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


class Engine(abc.ABC):
    """A recogniser: fed 16 kHz mono s16le PCM in order, it returns utterances with word timings.

    One instance serves one file. An engine that needs the whole file (WhisperX) may buffer in
    ``feed`` and work in ``finish``; the TRANSCRIBING percentage then waits at 99 meanwhile.
    """

    @abc.abstractmethod
    def feed(self, pcm: bytes) -> None:
        """Recognise the next piece of audio (any length, a whole number of samples)."""

    @abc.abstractmethod
    def finish(self) -> list[Utterance]:
        """The audio has ended: every utterance recognised, in order."""

    def align(self, audio: PcmAudio, utterances: list[Utterance], on_step: StepProgress) -> list[Utterance]:
        """Word timings for each utterance; by default the recogniser's own are kept."""
        on_step(1.0)
        return utterances


class Diarizer(abc.ABC):
    """Says who spoke when: turns utterances into speaker-labelled segments."""

    @abc.abstractmethod
    def diarize(self, audio: PcmAudio, utterances: list[Utterance], on_step: StepProgress) -> list[Segment]:
        """Segments covering the utterances' speech, each with a speaker label."""


class SingleSpeakerDiarizer(Diarizer):
    """The default: no real diarization; every utterance is one segment spoken by ``SPEAKER_1``."""

    def diarize(self, audio: PcmAudio, utterances: list[Utterance], on_step: StepProgress) -> list[Segment]:
        """One ``SPEAKER_1`` segment per utterance."""
        segments = [Segment(u.start, u.end, u.text, SINGLE_SPEAKER) for u in utterances if u.text]
        on_step(1.0)
        return segments


_ALTERNATE = re.compile(r"\(\d+\)$")  # "read(2)": the dictionary's second pronunciation of "read"


def _is_word(token: str) -> bool:
    """Whether a PocketSphinx segment is a spoken word, not silence, a filler or an utterance marker."""
    return not (token.startswith(("<", "[", "++")) or token in {"<sil>", "<s>", "</s>"})


class PocketSphinxEngine(Engine):
    """CMU PocketSphinx with its bundled US English model; endpointed by its voice activity detector.

    PocketSphinx holds the GIL while it decodes, so every call into it is kept short (a VAD frame, an
    alignment piece, an utterance of at most ``max_utterance_seconds``): a job's heartbeat thread runs.
    """

    frame_seconds = 0.01  # the acoustic model's frame rate: 100 frames per second
    max_utterance_seconds = 30.0
    align_piece_seconds = 0.5

    def __init__(self, **config: Any) -> None:
        from pocketsphinx import Decoder, Endpointer

        self._decoder = Decoder(loglevel="FATAL", **config)
        self._endpointer = Endpointer(sample_rate=SAMPLE_RATE)
        self._pending = b""
        self._start: float | None = None
        self._fed = 0  # bytes of the current utterance decoded so far
        self._utterances: list[Utterance] = []

    def feed(self, pcm: bytes) -> None:
        """Split the audio into VAD frames; decode the speech among them utterance by utterance."""
        data = self._pending + pcm
        size = self._endpointer.frame_bytes
        whole = len(data) - len(data) % size
        for i in range(0, whole, size):
            self._frame(self._endpointer.process(data[i : i + size]))
        self._pending = data[whole:]

    def _frame(self, speech: bytes | None) -> None:
        """Route one endpointer result: start, continue or end an utterance."""
        if speech is None:
            return
        if self._start is not None and self._fed >= self.max_utterance_seconds * BYTES_PER_SECOND:
            # Speech without a pause: cut it, so no single native call grows long (see class docstring).
            start = self._start + self._fed / BYTES_PER_SECOND
            self._end_utterance()
            self._begin_utterance(start)
        if self._start is None:
            self._begin_utterance(float(self._endpointer.speech_start))
        self._decoder.process_raw(speech, False, False)
        self._fed += len(speech)
        if not self._endpointer.in_speech:
            self._end_utterance()

    def _begin_utterance(self, start: float) -> None:
        self._start, self._fed = start, 0
        self._decoder.start_utt()

    def _end_utterance(self) -> None:
        assert self._start is not None
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        words = self._words(self._start)
        text = hyp.hypstr.strip() if hyp is not None else ""
        start, end = round(self._start, 2), round(self._start + self._fed / BYTES_PER_SECOND, 2)
        if text:
            self._utterances.append(Utterance(start, end, text, words))
        self._start = None

    def _words(self, offset: float) -> list[Word]:
        """The last utterance's words, their frame times moved to file seconds."""
        words = []
        for seg in self._decoder.seg():
            if _is_word(seg.word):
                start = round(offset + seg.start_frame * self.frame_seconds, 2)
                end = round(offset + (seg.end_frame + 1) * self.frame_seconds, 2)
                words.append(Word(_ALTERNATE.sub("", seg.word), start, end))
        return words

    def finish(self) -> list[Utterance]:
        """Flush the endpointer (a file may end mid-sentence) and return every utterance."""
        if self._endpointer.in_speech:
            self._frame(self._endpointer.end_stream(self._pending))
            if self._start is not None:  # the endpointer returned nothing more
                self._end_utterance()
        self._pending = b""
        return self._utterances

    def align(self, audio: PcmAudio, utterances: list[Utterance], on_step: StepProgress) -> list[Utterance]:
        """Force-align each utterance's text to its audio for word timings unbiased by the language model."""
        aligned = []
        for i, utt in enumerate(utterances):
            aligned.append(self._align_one(audio, utt))
            on_step((i + 1) / len(utterances))
        self._decoder.activate_search()  # back to the language model
        return aligned

    def _align_one(self, audio: PcmAudio, utt: Utterance) -> Utterance:
        """One utterance realigned; its recognition timings kept if alignment finds no path."""
        try:
            self._decoder.set_align_text(" ".join(w.word for w in utt.words))
            self._decoder.start_utt()
            pcm = audio.read(utt.start, utt.end)
            piece = int(self.align_piece_seconds * BYTES_PER_SECOND)
            for i in range(0, len(pcm), piece):
                self._decoder.process_raw(pcm[i : i + piece], False, False)
            self._decoder.end_utt()
        except (RuntimeError, ValueError, KeyError):
            return utt
        words = self._words(utt.start)
        if [w.word for w in words] != [w.word for w in utt.words]:
            return utt
        return Utterance(utt.start, utt.end, utt.text, words)


def load_engine(path: str | None = None) -> Engine:
    """A new engine: ``path`` (dotted), else ``settings.TRANSCRIPTION_ENGINE``, else PocketSphinx."""
    path = path or getattr(settings, "TRANSCRIPTION_ENGINE", None) or DEFAULT_ENGINE
    cls = _import_class(path, Engine)
    engine: Engine = cls()
    return engine


def load_diarizer(path: str | None = None) -> Diarizer:
    """A new diarizer: ``path``, else ``settings.TRANSCRIPTION_DIARIZER``, else the single-speaker one."""
    path = path or getattr(settings, "TRANSCRIPTION_DIARIZER", None) or DEFAULT_DIARIZER
    cls = _import_class(path, Diarizer)
    diarizer: Diarizer = cls()
    return diarizer


def _import_class(path: str, kind: type[Any]) -> type[Any]:
    """The class at dotted ``path``; ImproperlyConfigured unless it subclasses ``kind``."""
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{path!r} is not an importable {kind.__name__} class: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, kind)):
        raise ImproperlyConfigured(f"{path!r} is not a subclass of {kind.__module__}.{kind.__name__}")
    return cls
