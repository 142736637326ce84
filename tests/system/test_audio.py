"""Audio sniffing and decoding to 16 kHz mono PCM, on real files made with sox."""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from transcription.audio import (
    BYTES_PER_SECOND,
    HEADER_BYTES,
    SUPPORTED_FORMATS,
    AudioError,
    AudioTooLong,
    decodable_formats,
    decode_to_pcm16k,
    duration,
    is_audio,
    open_pcm16k,
    sniff,
)


def tone(path: Path, *options: str, seconds: float = 1.0) -> Path:
    """A sine tone written by sox; ``options`` set the output format (rate, channels, bits...)."""
    subprocess.run(["sox", "-n", *options, str(path), "synth", str(seconds), "sine", "440"], check=True)
    return path


def header(path: Path) -> bytes:
    return path.read_bytes()[:HEADER_BYTES]


def temp_raw_files() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("pcm16k-*.raw"))


@pytest.mark.parametrize(
    ("name", "options", "kind"),
    [
        ("a.wav", ("-r", "16000", "-c", "1", "-b", "16"), "wav"),
        ("a.flac", ("-r", "44100", "-c", "2"), "flac"),
        (
            "a.ogg",
            (
                "-r",
                "22050",
            ),
            "ogg",
        ),
        (
            "a.mp3",
            (
                "-r",
                "44100",
            ),
            "mp3",
        ),
        ("a.aiff", ("-r", "8000", "-b", "16"), "aiff"),
    ],
)
def test_sniff_names_each_supported_format(tmp_path, name, options, kind):
    path = tone(tmp_path / name, *options)
    assert sniff(header(path)) == kind
    assert is_audio(header(path))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text and not audio at all\n",
        b"<!DOCTYPE html><html><body>upload</body></html>",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3",
        b"RIFF\x24\x00\x00\x00AVI LIST",
        b"OggS\x00\x02" + bytes(22) + b"\x13OpusHead\x01\x02",
    ],
)
def test_is_audio_rejects_other_content(data):
    assert not is_audio(data)


def test_is_audio_accepts_a_bare_mpeg_frame_header():
    # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: what an MP3 without ID3 tag starts with.
    assert sniff(b"\xff\xfb\x90\x64" + bytes(8)) == "mp3"


def test_open_pcm16k_reads_a_canonical_wav_in_place(tmp_path):
    path = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16", seconds=2)
    before = temp_raw_files()
    with open_pcm16k(path) as audio:
        assert audio.path == path
        assert audio.offset >= 44
        assert audio.duration == pytest.approx(2.0)
        assert temp_raw_files() == before


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("stereo44k.wav", ("-r", "44100", "-c", "2", "-b", "16")),
        ("float.wav", ("-r", "16000", "-c", "1", "-e", "floating-point", "-b", "32")),
        ("a.flac", ("-r", "48000", "-c", "2")),
        (
            "a.ogg",
            (
                "-r",
                "22050",
            ),
        ),
        (
            "a.mp3",
            (
                "-r",
                "44100",
            ),
        ),
        ("a.aiff", ("-r", "8000", "-b", "16")),
    ],
)
def test_open_pcm16k_converts_other_formats_and_removes_its_temp_file(tmp_path, name, options):
    path = tone(tmp_path / name, *options, seconds=1.5)
    before = temp_raw_files()
    with open_pcm16k(path) as audio:
        assert audio.path != path
        assert audio.duration == pytest.approx(1.5, abs=0.06)  # mp3 adds encoder padding
    assert temp_raw_files() == before


def test_open_pcm16k_ignores_the_file_extension(tmp_path):
    flac = tone(tmp_path / "a.flac", "-r", "16000")
    disguised = flac.rename(tmp_path / "upload.bin")
    with open_pcm16k(disguised) as audio:
        assert audio.duration == pytest.approx(1.0)


def test_chunks_cover_the_audio_exactly(tmp_path):
    path = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16", seconds=1.3)
    with open_pcm16k(path) as audio:
        chunks = list(audio.chunks(0.5))
        assert [len(c) for c in chunks] == [16000, 16000, 9600]
        assert b"".join(chunks) == audio.read(0, audio.duration)


def test_read_clips_to_the_audio(tmp_path):
    path = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16", seconds=1)
    with open_pcm16k(path) as audio:
        assert len(audio.read(0.5, 5.0)) == BYTES_PER_SECOND // 2
        assert audio.read(-1.0, 0.0) == b""


def test_decode_to_pcm16k_returns_samples_and_duration(tmp_path):
    pcm, duration = decode_to_pcm16k(tone(tmp_path / "a.flac", "-r", "16000", seconds=0.75))
    assert duration == pytest.approx(0.75)
    assert len(pcm) == 12000 * 2
    assert max(abs(s) for (s,) in struct.iter_unpack("<h", pcm)) > 10000  # the tone, not silence


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty") as caught:
        decode_to_pcm16k(path)
    assert caught.value.error_code == "invalid_audio"


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(AudioError, match="could not be read"):
        decode_to_pcm16k(tmp_path / "nothing.wav")


def test_non_audio_file_is_refused_with_a_user_message(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my meeting notes, not a recording")
    with pytest.raises(AudioError) as caught:
        decode_to_pcm16k(path)
    assert "not audio" in caught.value.user_message
    assert caught.value.detail is not None


def test_wav_cut_inside_its_header_is_refused(tmp_path):
    whole = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"damaged|truncated"):
        decode_to_pcm16k(cut)


def test_wav_cut_inside_its_samples_is_refused(tmp_path):
    whole = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(AudioError, match="truncated") as caught:
        decode_to_pcm16k(cut)
    assert "declares" in (caught.value.detail or "")


def test_wav_without_samples_is_refused(tmp_path):
    whole = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16")
    empty = bytearray(whole.read_bytes()[:44])
    empty[40:44] = struct.pack("<I", 0xFFFFFFFF)  # streamed size: "until the end of the file"
    path = tmp_path / "nosamples.wav"
    path.write_bytes(bytes(empty))
    with pytest.raises(AudioError, match="no sound"):
        decode_to_pcm16k(path)


def test_streamed_wav_size_means_until_the_end(tmp_path):
    whole = bytearray(tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16").read_bytes())
    whole[40:44] = struct.pack("<I", 0xFFFFFFFF)
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(whole))
    _, duration = decode_to_pcm16k(path)
    assert duration == pytest.approx(1.0)


def test_damaged_flac_is_refused_with_the_decoder_message(tmp_path):
    flac = tone(tmp_path / "a.flac", "-r", "16000")
    path = tmp_path / "damaged.flac"
    path.write_bytes(flac.read_bytes()[:8] + bytes(range(256)) * 40)
    before = temp_raw_files()
    with pytest.raises(AudioError, match="could not be decoded") as caught:
        decode_to_pcm16k(path)
    assert caught.value.detail
    assert temp_raw_files() == before


def test_flac_cut_short_is_refused(tmp_path):
    flac = tone(tmp_path / "a.flac", "-r", "16000", seconds=3)
    data = flac.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="cut short"):
        decode_to_pcm16k(path)


def test_decodable_formats_are_what_this_machine_reads():
    # scripts/setup.sh installs sox and libsox-fmt-mp3, so every supported format decodes here.
    assert decodable_formats() == frozenset(SUPPORTED_FORMATS)


def test_without_sox_only_plain_wav_is_accepted(tmp_path, monkeypatch):
    wav = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16")
    flac = tone(tmp_path / "a.flac", "-r", "16000")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    decodable_formats.cache_clear()
    try:
        assert decodable_formats() == frozenset({"wav"})
        assert not is_audio(header(flac))
        with pytest.raises(AudioError, match="cannot decode FLAC"):
            decode_to_pcm16k(flac)
        assert decode_to_pcm16k(wav)[1] == pytest.approx(1.0)
    finally:
        decodable_formats.cache_clear()


def wav_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A RIFF/WAVE file of the given (id, body) chunks, exactly as given."""
    body = b"".join(
        cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2) for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def fmt_chunk(rate: int, channels: int = 1, bits: int = 16, tag: int = 1) -> tuple[bytes, bytes]:
    block = channels * bits // 8
    return b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


@pytest.mark.parametrize(
    ("ext", "options"),
    [
        ("flac", ("-r", "8000")),
        ("ogg", ("-r", "8000", "-C", "-1")),
        ("mp3", ("-r", "8000", "-C", "8")),
        ("aiff", ("-r", "8000")),
        ("wav", ("-r", "8000", "-e", "gsm-full-rate")),  # a compressed WAV: its length comes from sox
    ],
)
def test_duration_reads_every_format_without_an_extension(tmp_path, ext, options):
    made = tone(tmp_path / f"a.{ext}", *options, seconds=7)
    stored = tmp_path / "upload"  # stored uploads have no trustworthy extension
    made.rename(stored)
    assert duration(stored) == pytest.approx(7, abs=0.3)  # MP3 pads its last frame


def test_duration_of_pcm_wav_comes_from_its_header(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes([fmt_chunk(8000, channels=2), (b"data", bytes(8000 * 4 * 3))]))
    assert duration(path) == pytest.approx(3.0)


def test_duration_that_cannot_be_read_is_refused(tmp_path):
    flac = tone(tmp_path / "a.flac", "-r", "8000")
    path = tmp_path / "noise"
    path.write_bytes(flac.read_bytes()[:4] + bytes(range(256)) * 8)  # "fLaC", then no STREAMINFO
    with pytest.raises(AudioError) as caught:
        duration(path)
    assert caught.value.error_code == "invalid_audio"


@pytest.mark.parametrize(
    "fmts",
    [
        [fmt_chunk(100), fmt_chunk(192_000)],  # two format headers: decoders disagree on which counts
        [fmt_chunk(0)],
        [fmt_chunk(0xFFFFFFFF // 2)],
        [fmt_chunk(16_000, channels=0)],
        [fmt_chunk(16_000, channels=200)],
        [fmt_chunk(16_000, bits=12)],
    ],
)
def test_absurd_wav_headers_are_refused(tmp_path, fmts):
    path = tmp_path / "bad.wav"
    path.write_bytes(wav_bytes([*fmts, (b"data", bytes(32_000))]))
    with pytest.raises(AudioError) as caught:
        duration(path)
    assert caught.value.error_code == "invalid_audio"
    with pytest.raises(AudioError):
        decode_to_pcm16k(path)


def test_decode_stops_at_the_limit_whatever_the_header_says(tmp_path):
    long = tone(tmp_path / "a.flac", "-r", "44100", "-c", "2", seconds=60)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AudioTooLong) as caught, open_pcm16k(long, max_seconds=5, workdir=work):
        pass
    assert caught.value.error_code == "audio_too_long"
    kept = int(str(caught.value.detail).split(" with ")[1].split()[0])
    assert 0 < kept <= 5 * BYTES_PER_SECOND  # never more on disk than the limit's worth
    assert list(work.iterdir()) == []  # the partial decode is gone


def test_decode_within_the_limit_is_whole(tmp_path):
    flac = tone(tmp_path / "a.flac", "-r", "44100", seconds=4)
    with open_pcm16k(flac, max_seconds=5, workdir=tmp_path) as audio:
        assert audio.duration == pytest.approx(4.0)
        assert audio.path.parent == tmp_path


def test_canonical_wav_past_the_limit_is_refused_without_reading(tmp_path):
    wav = tone(tmp_path / "a.wav", "-r", "16000", "-c", "1", "-b", "16", seconds=6)
    with pytest.raises(AudioTooLong), open_pcm16k(wav, max_seconds=5):
        pass
