"""transcribe_file end to end on flite speech: the stages it reports and the transcript it returns."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import ALL_STAGES
from tests.fixtures_audio import fraction_recognised, make_speech_wav, spoken_text, wav_seconds
from transcription.pipeline import AudioError, Transcript, transcribe_file

Report = tuple[str, int, str | None]
pytestmark = pytest.mark.slow


class Recorder:
    """A progress callback that keeps every report."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def __call__(self, stage: str, percentage: int, message: str | None) -> None:
        self.reports.append((stage, percentage, message))

    def percentages(self, stage: str) -> list[int]:
        return [p for s, p, _ in self.reports if s == stage]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 15 s of spoken sentences."""
    return make_speech_wav(tmp_path_factory.mktemp("speech"), seconds_min=14)


@pytest.fixture(scope="module")
def run(speech: Path) -> tuple[Transcript, Recorder]:
    recorder = Recorder()
    return transcribe_file(speech, recorder), recorder


def test_stages_come_in_pipeline_order(run):
    _, recorder = run
    stages = [s for s, _, _ in recorder.reports]
    assert sorted(stages, key=ALL_STAGES.rank) == stages
    assert set(stages) == {"transcribing", "aligning", "diarizing"}


def test_transcribing_rises_from_0_to_100_in_many_steps(run, speech):
    _, recorder = run
    percentages = recorder.percentages("transcribing")
    assert percentages[0] == 0
    assert percentages[-1] == 100
    assert all(a < b for a, b in itertools.pairwise(percentages))
    assert len(percentages) >= wav_seconds(speech) / 0.5  # one report per half second of audio


def test_transcribing_percentage_follows_the_audio_heard(run):
    _, recorder = run
    assert recorder.reports[0] == ("transcribing", 0, "decoding audio")
    for stage, percentage, message in recorder.reports[1:]:
        if stage == "transcribing":
            match = re.fullmatch(r"([\d.]+) s of ([\d.]+) s", message or "")
            assert match
            heard, total = float(match[1]), float(match[2])
            assert abs(percentage - 100 * heard / total) <= 1.5


@pytest.mark.parametrize("stage", ["aligning", "diarizing"])
def test_later_stages_rise_from_0_to_100(run, stage):
    _, recorder = run
    percentages = recorder.percentages(stage)
    assert percentages[0] == 0
    assert percentages[-1] == 100
    assert percentages == sorted(set(percentages))


def test_transcript_contains_most_spoken_words(run, speech):
    transcript, _ = run
    assert fraction_recognised(spoken_text(speech), transcript.text) >= 0.8


def test_word_timings_rise_within_the_audio(run, speech):
    transcript, _ = run
    assert transcript.words
    previous_end = 0.0
    for word in transcript.words:
        assert previous_end <= word.start < word.end
        previous_end = word.end
    assert previous_end <= wav_seconds(speech) + 0.01


def test_segments_carry_speaker_labels_and_the_text(run):
    transcript, _ = run
    assert len(transcript.segments) >= 2  # sentences are split at pauses
    assert {s.speaker for s in transcript.segments} == {"SPEAKER_1"}
    assert " ".join(s.text for s in transcript.segments) == transcript.text
    assert " ".join(w.word for w in transcript.words) == transcript.text
    assert all(a.end <= b.start for a, b in itertools.pairwise(transcript.segments))


def test_to_json_has_the_result_document_shape(run):
    transcript, _ = run
    document = json.loads(json.dumps(transcript.to_json()))
    assert set(document) == {"text", "segments", "words"}
    assert document["text"] == transcript.text
    assert all(set(s) == {"start", "end", "text", "speaker"} for s in document["segments"])
    assert all(set(w) == {"word", "start", "end"} for w in document["words"])
    assert len(document["words"]) == len(transcript.words)


def test_non_audio_raises_audio_error_and_reports_nothing(tmp_path):
    path = tmp_path / "upload"
    path.write_text("definitely not a recording")
    recorder = Recorder()
    with pytest.raises(AudioError) as caught:
        transcribe_file(path, recorder)
    assert caught.value.user_message
    assert recorder.reports == []


def test_unknown_engine_is_refused_before_any_report(speech):
    recorder = Recorder()
    with pytest.raises(ImproperlyConfigured):
        transcribe_file(speech, recorder, engine="transcription.engines.NoSuchEngine")
    assert recorder.reports == []


def test_silence_gives_an_empty_transcript_through_every_stage(tmp_path):
    silence = tmp_path / "silence.wav"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "2"], check=True
    )
    recorder = Recorder()
    transcript = transcribe_file(silence, recorder)
    assert transcript.to_json() == {"text": "", "segments": [], "words": []}
    for stage in ("transcribing", "aligning", "diarizing"):
        assert recorder.percentages(stage)[-1] == 100


class Cancelled(Exception):
    """Raised by a callback to abandon a transcription."""


def test_callback_exception_stops_the_job_and_removes_decoded_audio(speech, tmp_path):
    flac = tmp_path / "speech.flac"
    subprocess.run(["sox", str(speech), str(flac)], check=True)
    before = set(Path(tempfile.gettempdir()).glob("pcm16k-*.raw"))
    reports: list[int] = []

    def cancel_at_a_quarter(stage: str, percentage: int, message: str | None) -> None:
        reports.append(percentage)
        if percentage >= 25:
            raise Cancelled

    with pytest.raises(Cancelled):
        transcribe_file(flac, cancel_at_a_quarter)
    assert reports[-1] < 40
    assert set(Path(tempfile.gettempdir()).glob("pcm16k-*.raw")) == before
