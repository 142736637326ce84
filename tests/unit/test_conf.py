"""The PROGRESS settings accessor: defaults, settings overrides and PROGRESS_* environment parsing."""

from __future__ import annotations

import pytest

from progress.conf import ProgressSettings, from_environ, get_settings


def test_conf_defaults(settings):
    settings.PROGRESS = {}
    current = get_settings()
    assert current == ProgressSettings()
    assert current.HEARTBEAT_INTERVAL == 30.0
    assert current.MAX_UPDATES_PER_SECOND == 10.0


def test_conf_settings_override(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 0.5, "MAX_FRAME_BYTES": 100}
    current = get_settings()
    assert current.HEARTBEAT_INTERVAL == 0.5
    assert current.MAX_FRAME_BYTES == 100
    assert current.STALE_AFTER == ProgressSettings().STALE_AFTER


def test_conf_override_is_seen_after_change(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 1}
    assert get_settings().HEARTBEAT_INTERVAL == 1
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVAL": 2}
    assert get_settings().HEARTBEAT_INTERVAL == 2


def test_conf_unknown_key_is_an_error(settings):
    settings.PROGRESS = {**settings.PROGRESS, "HEARTBEAT_INTERVALL": 1}
    with pytest.raises(ValueError, match="HEARTBEAT_INTERVALL"):
        get_settings()


def test_conf_env_float_and_int():
    parsed = from_environ({"PROGRESS_HEARTBEAT_INTERVAL": "0.5", "PROGRESS_MAX_FRAME_BYTES": "2048"})
    assert parsed == {"HEARTBEAT_INTERVAL": 0.5, "MAX_FRAME_BYTES": 2048}
    assert isinstance(parsed["MAX_FRAME_BYTES"], int)


def test_conf_env_ignores_unrelated_variables():
    assert from_environ({"PATH": "/bin", "PROGRESS_NOT_A_SETTING": "1"}) == {}


def test_conf_env_empty_is_empty():
    assert from_environ({}) == {}


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("PROGRESS_HEARTBEAT_INTERVAL", "soon"),
        ("PROGRESS_MAX_FRAME_BYTES", "1.5"),
        ("PROGRESS_STALE_AFTER", ""),
    ],
)
def test_conf_env_bad_value_names_the_variable(key, raw):
    with pytest.raises(ValueError, match=key):
        from_environ({key: raw})


def test_conf_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("PROGRESS_CHANNEL_CAPACITY", "77")
    assert from_environ()["CHANNEL_CAPACITY"] == 77
