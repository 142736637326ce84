"""Transcript downloads as text: SubRip and WebVTT timings, escaping, order, file names."""

from __future__ import annotations

import json

from transcription.formats import cues, download_name, render, srt, timestamp, txt, vtt

RESULT = {
    "text": "hello there general kenobi",
    "segments": [
        {"start": 62.345, "end": 64.0, "speaker": "SPEAKER_2", "text": "general kenobi"},
        {"start": 0.0, "end": 1.5, "speaker": "SPEAKER_1", "text": "hello there"},
    ],
    "words": [],
}


def test_formats_timestamp_srt_and_vtt_separators():
    assert timestamp(62.345, ",") == "00:01:02,345"
    assert timestamp(3 * 3600 + 0.0004, ".") == "03:00:00.000"
    assert timestamp(59.9996, ".") == "00:01:00.000"


def test_formats_cues_sorted_and_clamped():
    found = cues(
        {
            "segments": [
                {"start": 5, "end": 2, "speaker": "A", "text": "late"},
                {"start": "nan", "end": -3, "speaker": None, "text": "early"},
                {"start": 1, "end": 2, "speaker": "B", "text": "   "},
                "not a segment",
            ]
        }
    )
    assert [(c.start, c.end, c.text) for c in found] == [(0.0, 0.0, "early"), (5.0, 5.0, "late")]


def test_formats_srt_numbered_cues_with_commas():
    assert srt(RESULT) == (
        "1\n00:00:00,000 --> 00:00:01,500\nSPEAKER_1: hello there\n"
        "\n"
        "2\n00:01:02,345 --> 00:01:04,000\nSPEAKER_2: general kenobi\n"
    )


def test_formats_vtt_header_dots_and_voice_spans():
    assert vtt(RESULT) == (
        "WEBVTT\n"
        "\n00:00:00.000 --> 00:00:01.500\n<v SPEAKER_1>hello there\n"
        "\n00:01:02.345 --> 00:01:04.000\n<v SPEAKER_2>general kenobi\n"
    )


def test_formats_cue_text_cannot_break_the_file():
    hostile = {"segments": [{"start": 1, "end": 2, "speaker": "x", "text": "a\n\n2\n00:00 --> 00:01 <b>&"}]}
    body = vtt(hostile)
    assert body.count("-->") == 1
    assert "\n\n" not in body.split("\n", 2)[2].strip()
    assert "&lt;b&gt;&amp;" in body
    assert srt(hostile).count("-->") == 1


def test_formats_txt_lines_and_bare_text_fallback():
    assert txt(RESULT) == "[00:00:00] SPEAKER_1: hello there\n[00:01:02] SPEAKER_2: general kenobi\n"
    assert txt({"text": "just words", "segments": []}) == "just words\n"


def test_formats_render_json_round_trips():
    body, content_type = render(RESULT, "json")
    assert content_type.startswith("application/json")
    assert json.loads(body) == RESULT


def test_formats_download_name_from_upload():
    assert download_name("Interview 3.final.wav", "srt") == "Interview 3.final.srt"
    assert download_name("../../etc/passwd", "txt") == "passwd.txt"
    assert download_name("C:\\Users\\me\\talk.mp3", "vtt") == "talk.vtt"
    assert download_name("", "json") == "transcript.json"
    assert download_name(".hidden", "txt") == "hidden.txt"
    assert download_name("bad\x00name\r\n.wav", "srt") == "bad_name.srt"


def test_formats_one_speaker_is_not_named_on_every_line():
    alone = {
        "segments": [
            {"start": 0, "end": 1, "speaker": "SPEAKER_1", "text": "hello"},
            {"start": 1, "end": 2, "speaker": "SPEAKER_1", "text": "again"},
        ]
    }
    assert txt(alone) == "[00:00:00] hello\n[00:00:01] again\n"
    assert "SPEAKER" not in srt(alone) + vtt(alone)
