"""The engine plug-in points and the PocketSphinx recogniser, on flite speech."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.fixtures_audio import SPEECH_TEXT, fraction_recognised, make_speech_wav
from transcription.audio import PcmAudio, open_pcm16k
from transcription.engines import (
    PocketSphinxEngine,
    SingleSpeakerDiarizer,
    Utterance,
    Word,
    _is_word,
    load_diarizer,
    load_engine,
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 6 s of two spoken sentences."""
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPEECH_TEXT)


def recognise(audio: PcmAudio, piece_bytes: int) -> list[Utterance]:
    engine = PocketSphinxEngine()
    pcm = audio.read(0, audio.duration)
    for i in range(0, len(pcm), piece_bytes):
        engine.feed(pcm[i : i + piece_bytes])
    return engine.finish()


@pytest.fixture(scope="module")
def utterances(speech: Path) -> list[Utterance]:
    with open_pcm16k(speech) as audio:
        return recognise(audio, 16000)


def test_load_engine_defaults_to_pocketsphinx():
    assert isinstance(load_engine(), PocketSphinxEngine)


def test_load_engine_reads_the_setting(settings):
    settings.TRANSCRIPTION_ENGINE = "transcription.engines.NoSuchEngine"
    with pytest.raises(ImproperlyConfigured, match="NoSuchEngine"):
        load_engine()


def test_load_engine_argument_overrides_the_setting(settings):
    settings.TRANSCRIPTION_ENGINE = "transcription.engines.NoSuchEngine"
    assert isinstance(load_engine("transcription.engines.PocketSphinxEngine"), PocketSphinxEngine)


def test_load_engine_refuses_a_class_that_is_not_an_engine():
    with pytest.raises(ImproperlyConfigured, match="not a subclass"):
        load_engine("transcription.engines.SingleSpeakerDiarizer")


def test_load_diarizer_defaults_to_single_speaker():
    assert isinstance(load_diarizer(), SingleSpeakerDiarizer)


def test_load_diarizer_reads_the_setting(settings):
    settings.TRANSCRIPTION_DIARIZER = "no.such.module.Diarizer"
    with pytest.raises(ImproperlyConfigured, match=r"no\.such\.module"):
        load_diarizer()


def test_single_speaker_diarizer_labels_every_utterance(speech):
    utts = [
        Utterance(0.2, 1.5, "hello there", [Word("hello", 0.2, 0.6), Word("there", 0.7, 1.5)]),
        Utterance(2.0, 3.0, "goodbye", [Word("goodbye", 2.0, 3.0)]),
    ]
    steps: list[float] = []
    with open_pcm16k(speech) as audio:
        segments = SingleSpeakerDiarizer().diarize(audio, utts, steps.append)
    assert [(s.start, s.end, s.text, s.speaker) for s in segments] == [
        (0.2, 1.5, "hello there", "SPEAKER_1"),
        (2.0, 3.0, "goodbye", "SPEAKER_1"),
    ]
    assert steps[-1] == 1.0


@pytest.mark.parametrize(
    ("token", "spoken"),
    [("<s>", False), ("</s>", False), ("<sil>", False), ("[NOISE]", False), ("++UH++", False), ("dog", True)],
)
def test_is_word_keeps_only_spoken_words(token, spoken):
    assert _is_word(token) is spoken


def test_pocketsphinx_recognises_most_words(utterances):
    text = " ".join(u.text for u in utterances)
    assert fraction_recognised(SPEECH_TEXT, text) >= 0.8


def test_pocketsphinx_words_match_the_text(utterances):
    for utt in utterances:
        assert [w.word for w in utt.words] == utt.text.split()


def test_pocketsphinx_word_times_rise_within_their_utterance(utterances, speech):
    with open_pcm16k(speech) as audio:
        duration = audio.duration
    previous_end = 0.0
    for utt in utterances:
        assert 0 <= utt.start < utt.end <= duration + 0.01
        for word in utt.words:
            assert previous_end <= word.start < word.end
            assert utt.start <= word.start
            assert word.end <= utt.end + 0.05
            previous_end = word.end


def test_pocketsphinx_result_does_not_depend_on_piece_size(speech, utterances):
    with open_pcm16k(speech) as audio:
        odd = recognise(audio, 1234)  # not a whole number of VAD frames, nor of samples
    assert [u.text for u in odd] == [u.text for u in utterances]


def test_pocketsphinx_finishes_an_utterance_cut_mid_sentence(speech, tmp_path):
    cut = tmp_path / "cut.wav"
    subprocess.run(["sox", str(speech), str(cut), "trim", "0", "2.0"], check=True)
    with open_pcm16k(cut) as audio:
        utts = recognise(audio, 8000)
    assert utts
    assert utts[-1].end == pytest.approx(2.0, abs=0.05)
    assert fraction_recognised("the quick brown fox", utts[0].text) >= 0.75


def test_pocketsphinx_hears_nothing_in_silence(tmp_path):
    silence = tmp_path / "silence.wav"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "3"], check=True
    )
    with open_pcm16k(silence) as audio:
        assert recognise(audio, 8000) == []


def test_pocketsphinx_align_keeps_the_words_and_retimes_them(speech, utterances):
    steps: list[float] = []
    engine = PocketSphinxEngine()
    with open_pcm16k(speech) as audio:
        aligned = engine.align(audio, utterances, steps.append)
    assert [u.text for u in aligned] == [u.text for u in utterances]
    for before, after in zip(utterances, aligned, strict=True):
        assert [w.word for w in after.words] == [w.word for w in before.words]
        assert all(after.start <= w.start < w.end <= after.end + 0.05 for w in after.words)
    assert steps == sorted(steps)
    assert steps[-1] == 1.0


def test_pocketsphinx_cuts_speech_without_pauses_into_bounded_utterances(speech, utterances):
    engine = PocketSphinxEngine()
    engine.max_utterance_seconds = 2.0
    with open_pcm16k(speech) as audio:
        pcm = audio.read(0, audio.duration)
    engine.feed(pcm)
    cut = engine.finish()
    assert len(cut) > len(utterances)
    assert all(u.end - u.start <= 2.05 for u in cut)
    assert fraction_recognised(SPEECH_TEXT, " ".join(u.text for u in cut)) >= 0.6
