"""Start-up recovery: work an earlier server process left queued or cut off."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from progress import report_progress
from progress.models import Task
from progress.schemas import utcnow
from tests.fixtures_audio import make_speech_wav
from tests.jobs_helpers import uploaded
from transcription import recovery

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_progress")]


def test_recovery_recover_requeues_work_an_earlier_process_left_queued(media, tmp_path, settings):
    settings.REDIS_URL = ""
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    assert recovery.recover(before=utcnow() + timedelta(seconds=1)) == ["job1"]
    deadline = time.monotonic() + 120
    while Task.objects.get(pk="job1").status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Task.objects.get(pk="job1").status == "complete"


def test_recovery_recover_fails_an_upload_cut_off_by_a_restart(media):
    report_progress("up1", "uploading", 30)
    assert recovery.recover(before=utcnow() + timedelta(seconds=1)) == []
    task = Task.objects.get(pk="up1")
    assert (task.status, task.error_code) == ("failed", "upload_interrupted")


def test_recovery_recover_leaves_work_of_this_process(media, tmp_path):
    before = utcnow()
    uploaded(media, make_speech_wav(tmp_path / "audio"))
    report_progress("up1", "uploading", 30)
    assert recovery.recover(before=before) == []
    assert list(Task.objects.values_list("status", flat=True)) == ["running", "running"]
