"""Recognise audio files by their content and decode them to 16 kHz mono 16-bit PCM for the recogniser."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH
HEADER_BYTES = 64
"""Bytes of a file's start that ``sniff`` / ``is_audio`` need."""
SUPPORTED_FORMATS = ("wav", "flac", "ogg", "mp3", "aiff")

_WAVE_FORMAT_PCM = 0x0001
_FIXED_FRAME_TAGS = {0x0001, 0x0003, 0x0006, 0x0007}
"""WAV encodings whose frames are ``channels * bits / 8`` bytes (PCM, float, A-law, mu-law): the header
alone gives their length. Any other encoding's length comes from the decoder."""
_STREAMING_SIZES = {0, 0xFFFFFFFF}  # written by encoders that could not seek back to fill in the size
MAX_WAV_RATE = 768_000
MAX_WAV_CHANNELS = 32
INFO_TIMEOUT = 30.0
"""Seconds sox may take to read a file's length from its header (it reads no samples)."""
DECODE_BLOCK = 256 * 1024
MAX_SOX_MESSAGES = 64 * 1024


class AudioError(ValueError):
    """The file is not audio this service can decode; ``user_message`` is safe to show to the uploader."""

    error_code = "invalid_audio"

    def __init__(self, user_message: str, detail: str | None = None) -> None:
        super().__init__(user_message if detail is None else f"{user_message} ({detail})")
        self.user_message = user_message
        self.detail = detail


class AudioTooLong(AudioError):
    """The audio lasts longer than the limit: known from its header, or found while decoding it."""

    error_code = "audio_too_long"

    def __init__(self, limit: float, detail: str | None = None) -> None:
        super().__init__(f"The recording is longer than the {limit:g} seconds this service accepts.", detail)


def sniff(header: bytes) -> str | None:
    """The audio container a file's first bytes announce (one of SUPPORTED_FORMATS), or None."""
    if len(header) >= 12 and header[:4] == b"RIFF" and header[8:12] == b"WAVE":
        return "wav"
    if header[:4] == b"fLaC":
        return "flac"
    if header[:4] == b"OggS":
        # sox reads Ogg Vorbis only; an Opus stream names its codec in the first page.
        return None if b"OpusHead" in header else "ogg"
    if len(header) >= 12 and header[:4] == b"FORM" and header[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if header[:3] == b"ID3":
        return "mp3"
    # An MPEG audio frame header: 11 sync bits, a valid version and layer, a valid bitrate and rate.
    if len(header) >= 4 and header[0] == 0xFF and header[1] & 0xE0 == 0xE0:
        version, layer = (header[1] >> 3) & 0x3, (header[1] >> 1) & 0x3
        bitrate, rate = header[2] >> 4, (header[2] >> 2) & 0x3
        if version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3:
            return "mp3"
    return None


def is_audio(header: bytes) -> bool:
    """Whether a file starting with ``header`` (at least HEADER_BYTES) looks like audio we can decode."""
    return sniff(header) in decodable_formats()


@functools.cache
def decodable_formats() -> frozenset[str]:
    """The SUPPORTED_FORMATS this machine decodes: WAV always, the others if its sox reads them."""
    sox = shutil.which("sox")
    if sox is None:
        return frozenset({"wav"})
    usage = subprocess.run([sox, "-h"], capture_output=True, text=True, check=False).stdout
    line = next((x for x in usage.splitlines() if x.startswith("AUDIO FILE FORMATS:")), "")
    readable = set(line.partition(":")[2].split())
    return frozenset({"wav"} | {f for f in SUPPORTED_FORMATS if f in readable})


@dataclass(frozen=True)
class PcmAudio:
    """16 kHz mono signed 16-bit little-endian PCM: ``nbytes`` bytes at ``offset`` of the file ``path``."""

    path: Path
    offset: int
    nbytes: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.nbytes / BYTES_PER_SECOND

    def chunks(self, seconds: float) -> Iterator[bytes]:
        """The samples in consecutive pieces of ``seconds`` each (the last may be shorter)."""
        size = max(SAMPLE_WIDTH, int(seconds * SAMPLE_RATE) * SAMPLE_WIDTH)
        left = self.nbytes
        with self.path.open("rb") as f:
            f.seek(self.offset)
            while left > 0:
                data = f.read(min(size, left))
                if not data:
                    raise AudioError("The audio file changed while it was being read.", str(self.path))
                left -= len(data)
                yield data

    def read(self, start: float, end: float) -> bytes:
        """The samples between ``start`` and ``end`` seconds (clipped to the audio)."""
        first = max(0, min(self.nbytes, int(start * SAMPLE_RATE) * SAMPLE_WIDTH))
        last = max(first, min(self.nbytes, int(end * SAMPLE_RATE) * SAMPLE_WIDTH))
        with self.path.open("rb") as f:
            f.seek(self.offset + first)
            return f.read(last - first)


@dataclass(frozen=True)
class _WavLayout:
    format_tag: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_bytes: int


def _wav_layout(path: Path, size: int | None = None) -> _WavLayout:
    """Walk a RIFF/WAVE file's chunks: its format and where its samples are; AudioError if broken.

    ``size``: the whole file's, when ``path`` holds only its beginning (an upload still arriving)."""
    size = path.stat().st_size if size is None else size
    fmt: tuple[int, int, int, int] | None = None
    with path.open("rb") as f:
        f.seek(12)
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise AudioError("The WAV file is truncated: it has no audio data.", "no data chunk")
            chunk_id, chunk_size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk_id == b"fmt ":
                if fmt is not None:  # decoders disagree on which one counts: refuse, never guess
                    raise AudioError("The WAV file is damaged: it has more than one format header.")
                body = f.read(chunk_size)
                if chunk_size < 16 or len(body) < 16:
                    raise AudioError("The WAV file is damaged: its format header is too short.")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                _check_format(tag, channels, rate, bits)
                fmt = (tag, channels, rate, bits)
                f.seek(chunk_size % 2, os.SEEK_CUR)
                continue
            if chunk_id == b"data":
                if fmt is None:
                    raise AudioError("The WAV file is damaged: audio data comes before its format.")
                offset = f.tell()
                available = size - offset
                if chunk_size in _STREAMING_SIZES:
                    chunk_size = available
                elif chunk_size > available:
                    raise AudioError(
                        "The WAV file is truncated: it ends before its audio data does.",
                        f"data chunk declares {chunk_size} bytes, file has {available}",
                    )
                return _WavLayout(*fmt, data_offset=offset, data_bytes=chunk_size)
            f.seek(chunk_size + chunk_size % 2, os.SEEK_CUR)
            if f.tell() > size:
                raise AudioError("The WAV file is truncated.", f"chunk {chunk_id!r} runs past the end")


def _check_format(tag: int, channels: int, rate: int, bits: int) -> None:
    """Refuse a WAV format header no recording has: no channels, no or absurd rate, odd sample sizes."""
    if not 1 <= channels <= MAX_WAV_CHANNELS:
        raise AudioError("The WAV file is damaged: its channel count is impossible.", f"{channels} channels")
    if not 1 <= rate <= MAX_WAV_RATE:
        raise AudioError("The WAV file is damaged: its sample rate is impossible.", f"{rate} Hz")
    if tag in _FIXED_FRAME_TAGS and bits not in (8, 16, 24, 32, 64):
        raise AudioError("The WAV file is damaged: its sample size is impossible.", f"{bits} bits")


def check_file(path: Path) -> str:
    """The file's format by content (cheap: reads its header); AudioError if missing, empty or not audio."""
    try:
        with path.open("rb") as f:
            header = f.read(HEADER_BYTES)
    except OSError as exc:
        raise AudioError("The audio file could not be read.", str(exc)) from exc
    if not header:
        raise AudioError("The file is empty.")
    kind = sniff(header)
    if kind is None:
        raise AudioError(
            "The file is not audio in a supported format (WAV, FLAC, Ogg Vorbis, MP3 or AIFF).",
            f"first bytes: {header[:HEADER_BYTES].hex()}",
        )
    if kind not in decodable_formats():
        raise AudioError(
            f"This server cannot decode {kind.upper()} audio; please upload WAV or FLAC.",
            f"sox here reads only {sorted(decodable_formats())} (MP3 needs Debian's libsox-fmt-mp3)",
        )
    return kind


def declared_duration(path: Path, size: int) -> float | None:
    """The length a WAV's header declares while ``path`` holds only the first bytes of a file of
    ``size``; None when it cannot say yet (not WAV, or the header not all here): the whole file is
    checked once it has arrived."""
    try:
        if check_file(path) != "wav":
            return None
        layout = _wav_layout(path, size)
    except AudioError:
        return None
    if layout.format_tag not in _FIXED_FRAME_TAGS:
        return None
    return layout.data_bytes / (layout.channels * layout.bits // 8 * layout.rate)


def duration(path: Path) -> float:
    """The audio's length in seconds, from its header (no samples decoded); AudioError if unknown."""
    kind = check_file(path)
    if kind == "wav":
        layout = _wav_layout(path)
        if layout.format_tag in _FIXED_FRAME_TAGS:
            return layout.data_bytes / (layout.channels * layout.bits // 8 * layout.rate)
    seconds = _sox_info_duration(path, kind)
    if seconds is None or not 0 < seconds < float("inf"):
        raise AudioError("The length of this recording could not be read from the file.", f"sox: {seconds}")
    return seconds


def _sox_info_duration(path: Path, kind: str) -> float | None:
    """sox's reading of the file's length (its header, or for MP3 a scan of frame headers), or None."""
    sox = shutil.which("sox")
    if sox is None:
        return None
    # sox picks a reader by file name (it cannot tell MP3 from content), and `--i` takes no type
    # option: a link named for the sniffed format tells it.
    with tempfile.TemporaryDirectory(prefix="soxi-") as folder:
        link = Path(folder) / f"audio.{kind}"
        link.symlink_to(Path(path).resolve())
        try:
            result = subprocess.run(
                [sox, "--i", "-D", str(link)],
                capture_output=True,
                text=True,
                check=False,
                timeout=INFO_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return None
    try:
        return float(result.stdout.strip())
    except ValueError:
        return None


def _sox_to_raw(
    path: Path, kind: str, out: Path, max_bytes: int | None, check: Callable[[], None] | None = None
) -> None:
    """Convert any format sox reads to raw 16 kHz mono s16le PCM in ``out``, stopping with AudioTooLong
    once more than ``max_bytes`` came out (whatever the header said); AudioError on failure."""
    sox = shutil.which("sox")
    if sox is None:
        raise AudioError(f"This server cannot decode {kind.upper()} audio.", "sox is not installed")
    # Explicit input type: uploads are stored without a trustworthy extension.
    command = [sox, "-V2", "-t", kind, str(path), "-t", "raw", "-e", "signed-integer", "-b", "16"]
    command += ["-c", "1", "-r", str(SAMPLE_RATE), "-L", "-"]
    written = 0
    with tempfile.TemporaryFile() as errors, out.open("wb") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            while block := process.stdout.read(DECODE_BLOCK):
                if check is not None:
                    check()  # a cancelled job stops mid-decode (the finally below ends sox)
                if max_bytes is not None and written + len(block) > max_bytes:
                    written += sink.write(block[: max_bytes - written])  # up to the limit, not past it
                    detail = f"decoding stopped at the limit with {written} bytes of samples on disk"
                    raise AudioTooLong(max_bytes / BYTES_PER_SECOND, detail)
                written += sink.write(block)
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()
            returncode = process.wait()
        errors.seek(0)
        messages = errors.read(MAX_SOX_MESSAGES).decode(errors="replace").strip()
    # sox exits 0 on some decoder failures (a FLAC cut short) but says FAIL.
    if returncode != 0 or " FAIL " in messages:
        detail = messages[-2000:] or f"sox exited {returncode}"
        raise AudioError(
            f"The {kind.upper()} file could not be decoded; it may be damaged or cut short.", detail
        )
    if messages:
        log.warning("sox decoding %s: %s", path, messages[-2000:])


@contextmanager
def open_pcm16k(
    path: Path,
    *,
    max_seconds: float | None = None,
    workdir: Path | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[PcmAudio]:
    """The file's audio as 16 kHz mono PCM, decoded to a temporary file in ``workdir`` when needed
    (removed after). Past ``max_seconds`` of audio it raises AudioTooLong, and a decode stops there."""
    path = Path(path)
    kind = check_file(path)
    max_bytes = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) * SAMPLE_WIDTH
    if kind == "wav":
        layout = _wav_layout(path)
        if (layout.format_tag, layout.channels, layout.rate, layout.bits) == (
            _WAVE_FORMAT_PCM,
            1,
            SAMPLE_RATE,
            16,
        ):
            audio = PcmAudio(path, layout.data_offset, layout.data_bytes - layout.data_bytes % SAMPLE_WIDTH)
            if max_bytes is not None and audio.nbytes > max_bytes:
                raise AudioTooLong(max_bytes / BYTES_PER_SECOND, f"{audio.duration:.0f} s of samples")
            _require_samples(audio)
            yield audio
            return
    fd, name = tempfile.mkstemp(prefix="pcm16k-", suffix=".raw", dir=workdir)
    os.close(fd)
    raw = Path(name)
    try:
        _sox_to_raw(path, kind, raw, max_bytes, check)
        size = raw.stat().st_size
        audio = PcmAudio(raw, 0, size - size % SAMPLE_WIDTH)
        _require_samples(audio)
        yield audio
    finally:
        raw.unlink(missing_ok=True)


def _require_samples(audio: PcmAudio) -> None:
    if audio.nbytes == 0:
        raise AudioError("The audio file contains no sound (zero length).")


def decode_to_pcm16k(path: Path) -> tuple[bytes, float]:
    """The whole file as 16 kHz mono s16le PCM bytes and its duration in seconds (for short files)."""
    with open_pcm16k(path) as audio:
        return audio.read(0, audio.duration), audio.duration
