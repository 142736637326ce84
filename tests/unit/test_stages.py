"""A project's stages: the rules, the setting, and that the progress app names none of the audio app's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from progress.conf import from_environ, get_settings
from progress.stages import COMPLETE, DEFAULT, QUEUED, Stages
from transcription.stages import STAGES as AUDIO_STAGES

PROGRESS_APP = Path(__file__).resolve().parents[2] / "progress"


def test_stages_declared_end_with_complete():
    stages = Stages.declared(["fetching", QUEUED, "rendering"])
    assert stages.names == ("fetching", "queued", "rendering", "complete")
    assert stages.working == ("fetching", "queued", "rendering")


def test_stages_rank_follows_the_declared_order():
    stages = Stages.declared(["fetching", QUEUED, "rendering"])
    assert [stages.rank(n) for n in stages.names] == [0, 1, 2, 3]
    assert "rendering" in stages
    assert "transcribing" not in stages


def test_stages_up_to_queued_come_before_a_job():
    stages = Stages.declared(["fetching", QUEUED, "rendering"])
    assert [stages.before_job(n) for n in stages.names] == [True, True, False, False]


@pytest.mark.parametrize(
    "declared",
    [
        ["rendering"],  # no queued: nowhere to wait for a worker
        [QUEUED, "rendering", "rendering"],
        [QUEUED, COMPLETE],  # the protocol's own
        [QUEUED, "Rendering"],
        [QUEUED, "x" * 33],
        [QUEUED, ""],
    ],
)
def test_stages_refuse_a_bad_declaration(declared):
    with pytest.raises(ValueError, match="stage"):
        Stages.declared(declared)


def test_stages_default_is_generic():
    assert Stages.declared(DEFAULT).names == ("queued", "running", "complete")


def test_stages_setting_and_environment(settings):
    assert from_environ({"PROGRESS_STAGES": "fetching, queued ,rendering"}) == {
        "STAGES": ("fetching", "queued", "rendering")
    }
    settings.PROGRESS = {"STAGES": ["fetching", "queued", "rendering"]}
    assert get_settings().stages.names == ("fetching", "queued", "rendering", "complete")
    settings.PROGRESS = {}
    assert get_settings().stages.names == ("queued", "running", "complete")


def test_stages_a_bad_setting_fails_when_read(settings):
    settings.PROGRESS = {"STAGES": ["rendering"]}
    with pytest.raises(ValueError, match="queued"):
        get_settings()


def test_stages_this_project_declares_the_audio_apps():
    assert get_settings().stages.working == AUDIO_STAGES


def test_stages_the_progress_app_names_no_audio_stage():
    audio_only = set(AUDIO_STAGES) - {QUEUED}
    pattern = re.compile(r"\b(" + "|".join(sorted(audio_only)) + r")\b")
    named = [
        f"{path.relative_to(PROGRESS_APP)}:{number}: {line.strip()}"
        for path in PROGRESS_APP.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".js", ".html", ".css"}
        and "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert named == []
