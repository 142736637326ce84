"""A stored transcript as a download: plain text, JSON, SubRip and WebVTT (pure functions, no I/O)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["FORMATS", "Cue", "cues", "download_name", "render", "srt", "timestamp", "txt", "vtt"]


@dataclass(frozen=True)
class Cue:
    """One segment of speech: when, who, what."""

    start: float
    end: float
    speaker: str
    text: str


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _one_line(text: Any) -> str:
    # A blank line ends a cue and "-->" starts a timing line: neither may appear inside cue text.
    return " ".join(str(text or "").split()).replace("-->", "->")


def cues(result: dict[str, Any]) -> list[Cue]:
    """The transcript's segments in time order, with times that never run backwards; with one
    speaker throughout, no cue names it (a label on every line says nothing)."""
    found = []
    for segment in result.get("segments") or []:
        if not isinstance(segment, dict):
            continue
        text = _one_line(segment.get("text"))
        if not text:
            continue
        start = _seconds(segment.get("start"))
        found.append(
            Cue(start, max(start, _seconds(segment.get("end"))), _one_line(segment.get("speaker")), text)
        )
    if len({cue.speaker for cue in found if cue.speaker}) <= 1:
        found = [replace(cue, speaker="") for cue in found]
    return sorted(found, key=lambda cue: (cue.start, cue.end))


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS<separator>mmm``: ``,`` for SubRip, ``.`` for WebVTT."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def txt(result: dict[str, Any]) -> str:
    """One line per segment: ``[HH:MM:SS] SPEAKER: text``; the bare text when there are no segments."""
    lines = [
        f"[{timestamp(cue.start, ',')[:8]}] {cue.speaker + ': ' if cue.speaker else ''}{cue.text}"
        for cue in cues(result)
    ]
    return "\n".join(lines) + "\n" if lines else _one_line(result.get("text")) + "\n"


def srt(result: dict[str, Any]) -> str:
    """SubRip: numbered cues, ``00:01:02,345 --> 00:01:04,000``, the speaker before the text."""
    blocks = []
    for number, cue in enumerate(cues(result), start=1):
        timing = f"{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}"
        blocks.append(f"{number}\n{timing}\n{cue.speaker + ': ' if cue.speaker else ''}{cue.text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt(result: dict[str, Any]) -> str:
    """WebVTT: the ``WEBVTT`` header, ``00:01:02.345 --> …`` timings, the speaker as a voice span."""
    blocks = ["WEBVTT\n"]
    for cue in cues(result):
        timing = f"{timestamp(cue.start, '.')} --> {timestamp(cue.end, '.')}"
        voice = f"<v {_vtt_escape(cue.speaker)}>" if cue.speaker else ""
        blocks.append(f"{timing}\n{voice}{_vtt_escape(cue.text)}\n")
    return "\n".join(blocks)


def _json(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2) + "\n"


FORMATS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "txt": ("text/plain; charset=utf-8", txt),
    "json": ("application/json; charset=utf-8", _json),
    "srt": ("application/x-subrip; charset=utf-8", srt),
    "vtt": ("text/vtt; charset=utf-8", vtt),
}
"""Each download format: its media type and its renderer."""


def render(result: dict[str, Any], fmt: str) -> tuple[str, str]:
    """The transcript in ``fmt`` (a key of FORMATS) and its media type."""
    content_type, renderer = FORMATS[fmt]
    return renderer(result), content_type


_UNSAFE = re.compile(r"[^\w.() -]+")


def download_name(original: str, fmt: str) -> str:
    """``<upload's name without its extension>.<fmt>``, without paths or control characters."""
    base = re.split(r"[\\/]", original or "")[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _UNSAFE.sub("_", unicodedata.normalize("NFC", stem)).strip(" ._")[:100]
    return f"{stem or 'transcript'}.{fmt}"
