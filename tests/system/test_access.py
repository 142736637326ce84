"""Ownership and watch tokens: who may see a task, decided without I/O where it can be."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore

from progress.access import (
    SESSION_OWNER_KEY,
    may_read,
    new_task_id,
    owners_of_scope,
    public_detail,
    token_valid,
    watch_token,
)
from progress.schemas import TASK_ID_PATTERN


def test_access_new_task_ids_are_long_random_and_valid():
    import re

    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.match(TASK_ID_PATTERN, i) and len(i) == 32 for i in ids)


def test_access_token_opens_its_task_only():
    token = watch_token("job1")
    assert token_valid("job1", token)
    assert not token_valid("job2", token)
    assert not token_valid("job1", watch_token("job2"))
    assert not token_valid("job1", None)
    assert not token_valid("job1", "")


@pytest.mark.parametrize("token", ["x", "1.2.3", "." * 40, "a" * 129, "\u00e9" * 10])
def test_access_garbage_tokens_are_invalid(token):
    assert not token_valid("job1", token)


def test_access_token_is_tamper_evident():
    token = watch_token("job1")
    for i in range(len(token)):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert not token_valid("job1", changed)


def test_access_token_expires(settings):
    settings.PROGRESS = {**settings.PROGRESS, "WATCH_TOKEN_MAX_AGE": 1}
    token = watch_token("job1")
    assert token_valid("job1", token)
    time.sleep(2.1)
    assert not token_valid("job1", token)


def test_access_token_depends_on_the_secret_key(settings):
    token = watch_token("job1")
    settings.SECRET_KEY = "another-key-entirely"
    assert not token_valid("job1", token)


def test_access_empty_owner_is_nobody():
    assert not may_read("", frozenset({""}))
    assert may_read("session:a", frozenset({"session:a"}))
    assert not may_read("session:a", frozenset({"session:b"}))


@pytest.mark.django_db
def test_access_owners_of_scope_from_the_session_cookie(settings):
    session = SessionStore()
    session[SESSION_OWNER_KEY] = "abc"
    session.save()
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}; other=1".encode()
    assert owners_of_scope({"headers": [(b"cookie", cookie)]}) == {"session:abc"}
    assert owners_of_scope({"headers": [(b"cookie", b"sessionid=forged")]}) == frozenset()
    assert owners_of_scope({"headers": [(b"cookie", b"\xff\x00;;==")]}) == frozenset()
    assert owners_of_scope({"headers": []}) == frozenset()


def test_access_owners_of_scope_uses_a_scope_session():
    scope = {"session": {SESSION_OWNER_KEY: "xyz"}, "user": AnonymousUser()}
    assert owners_of_scope(scope) == {"session:xyz"}


def test_access_public_detail_hides_paths_urls_and_tracebacks(settings):
    settings.DEBUG = False
    detail = "/usr/bin/sox FAIL formats: can't open input file /srv/media/uploads/abc.wav"
    assert "/" not in (public_detail(detail) or "")
    assert "FAIL formats" in (public_detail(detail) or "")
    assert public_detail("redis://:secret@10.0.0.5:6379/0 refused") == "… refused"
    assert public_detail("Traceback (most recent call last):\n  File x") is None
    assert public_detail("received 10 of 100 bytes") == "received 10 of 100 bytes"
    assert public_detail(None) is None


def test_access_public_detail_whole_when_allowed(settings):
    detail = "Traceback (most recent call last): /srv/x.py"
    settings.DEBUG = True
    assert public_detail(detail) == detail
    settings.DEBUG = False
    settings.PROGRESS = {**settings.PROGRESS, "EXPOSE_TECHNICAL_DETAIL": True}
    assert public_detail(detail) == detail
