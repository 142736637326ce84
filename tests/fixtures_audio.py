"""Spoken-English test audio made at test time with Debian ``flite`` and ``sox``."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. Please call me tomorrow morning about the weather report."
)
"""A sentence pair PocketSphinx recognises almost word for word from the kal16 voice."""

MORE_TEXT = (
    "The meeting starts at nine in the morning.",
    "We will talk about the budget and the new office.",
    "Thank you for listening to this short message.",
)
"""Further sentences appended in turn when a clip must reach ``seconds_min``."""

_PAUSE_SECONDS = 0.6


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run scripts/setup.sh (it installs flite and sox)")
    return path


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def wav_seconds(path: Path) -> float:
    """A PCM WAV file's duration."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _say(directory: Path, name: str, text: str) -> Path:
    """``text`` spoken by flite's kal16 voice, as 16 kHz mono 16-bit WAV followed by a short pause."""
    spoken = directory / f"{name}-flite.wav"
    out = directory / f"{name}.wav"
    _run(_tool("flite"), "-voice", "kal16", "-t", text, "-o", str(spoken))
    to_16k = ("-r", "16000", "-c", "1", "-b", "16")
    _run(_tool("sox"), str(spoken), *to_16k, str(out), "pad", "0", str(_PAUSE_SECONDS))
    spoken.unlink()
    return out


def make_speech_wav(tmp_path: Path, text: str = SPEECH_TEXT, seconds_min: float | None = None) -> Path:
    """A 16 kHz mono WAV of ``text`` in ``tmp_path``; with ``seconds_min``, further sentences follow until
    the clip lasts at least that long (the words spoken are in ``spoken_text(path)``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    parts = [_say(tmp_path, "part-0", text)]
    texts = [text]
    total = wav_seconds(parts[0])
    while seconds_min is not None and total < seconds_min:
        sentence = MORE_TEXT[(len(parts) - 1) % len(MORE_TEXT)]
        parts.append(_say(tmp_path, f"part-{len(parts)}", sentence))
        texts.append(sentence)
        total += wav_seconds(parts[-1])
    out = tmp_path / "speech.wav"
    if len(parts) == 1:
        parts[0].rename(out)
    else:
        _run(_tool("sox"), *map(str, parts), str(out))
        for part in parts:
            part.unlink()
    out.with_suffix(".txt").write_text(" ".join(texts))
    return out


def spoken_text(path: Path) -> str:
    """The text a ``make_speech_wav`` clip speaks."""
    return path.with_suffix(".txt").read_text()


def expected_words(text: str) -> list[str]:
    """The words of ``text`` as a recogniser writes them: lower case, no punctuation."""
    return [w.strip(".,!?;:").lower() for w in text.split() if w.strip(".,!?;:")]


def fraction_recognised(expected: str, recognised: str) -> float:
    """The share of the expected words (with repeats) that occur in the recognised text."""
    want = expected_words(expected)
    have = expected_words(recognised)
    found = 0
    for word in want:
        if word in have:
            have.remove(word)
            found += 1
    return found / len(want)
