"""API keys: made once and kept hashed, refused alike when unknown or revoked, acting as their user
with no CSRF token, and never written to a log."""

from __future__ import annotations

import io
import logging

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from progress import start_task
from progress.keys import authenticate, bearer, make_key, revoke
from progress.logs import redact
from progress.models import ApiKey

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob")


def keyed(key: str) -> Client:
    """A client that sends ``key`` as a bearer credential and enforces CSRF, as Django would for a browser."""
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_keys_made_key_opens_its_user_and_is_not_stored(alice):
    row, key = make_key(alice, "laptop script")
    assert key.startswith(f"tp_{row.prefix}_")
    found = authenticate(key)
    assert found is not None
    assert found.user == alice
    stored = ApiKey.objects.filter(pk=row.pk).values_list("prefix", "digest", "name").get()
    assert key not in "".join(stored)
    assert key.split("_", 2)[2] not in "".join(stored)


def test_keys_wrong_secret_unknown_prefix_and_junk_open_nothing(alice):
    _, key = make_key(alice)
    wrong = key[:-2] + ("aa" if not key.endswith("aa") else "bb")
    for attempt in (wrong, f"tp_00000000_{key.split('_', 2)[2]}", "tp_", "", "x" * 500, "tp__x", key + "x"):
        assert authenticate(attempt) is None, attempt


def test_keys_revoked_or_inactive_user_opens_nothing(alice, bob):
    row, key = make_key(alice)
    revoke(row)
    assert authenticate(key) is None
    _, other_key = make_key(bob)
    bob.is_active = False
    bob.save()
    assert authenticate(other_key) is None


def test_keys_use_is_recorded(alice):
    row, key = make_key(alice)
    assert row.last_used_at is None
    authenticate(key)
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_keys_bearer_header_parsing():
    assert bearer("Bearer tp_1_2") == "tp_1_2"
    assert bearer("bearer   tp_1_2 ") == "tp_1_2"
    assert bearer("Basic dXNlcjpwYXNz") is None
    assert bearer(None) is None


def test_keys_unknown_revoked_and_malformed_get_the_same_401(alice):
    row, key = make_key(alice)
    revoke(row)
    answers = []
    for sent in (key, "tp_00000000_nothing", "not-a-key"):
        response = keyed(sent).get("/api/transcriptions/")
        answers.append((response.status_code, response.json(), response["WWW-Authenticate"]))
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]


def test_keys_act_as_their_user_and_see_only_its_tasks(alice, bob):
    _, key = make_key(alice)
    mine = start_task("queued", owner=f"user:{alice.pk}")
    theirs = start_task("queued", owner=f"user:{bob.pk}")
    client = keyed(key)
    assert client.get(f"/api/tasks/{mine}/").status_code == 200
    refused = client.get(f"/api/tasks/{theirs}/")
    missing = client.get("/api/tasks/no-such-task/")
    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()


def test_keys_need_no_csrf_token_but_a_cookie_session_does(alice):
    _, key = make_key(alice)
    task_id = start_task("queued", owner=f"user:{alice.pk}")
    assert keyed(key).post(f"/api/tasks/{task_id}/cancel/").status_code == 200
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    other = start_task("queued", owner=f"user:{alice.pk}")
    refused = browser.post(f"/api/tasks/{other}/cancel/")
    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_failed"


def test_keys_make_no_session(alice):
    _, key = make_key(alice)
    client = keyed(key)
    client.get("/api/transcriptions/")
    assert "sessionid" not in client.cookies


def test_keys_command_prints_the_key_alone_on_its_last_line(alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "alice", "--name", "backup job", stdout=out, stderr=err)
    key = out.getvalue().strip().splitlines()[-1]
    row = authenticate(key)
    assert row is not None
    assert (row.user, row.name) == (alice, "backup job")
    assert key not in err.getvalue()


def test_keys_never_reach_a_log(alice, caplog):
    _, key = make_key(alice)
    assert key not in redact(f"GET /api/tasks/?api_key={key} with Authorization: Bearer {key}")
    assert key not in redact(f"a key {key} pasted into a message")
    caplog.set_level(logging.INFO)
    keyed(key).get("/api/tasks/no-such-task/")
    keyed(key + "x").get("/api/transcriptions/")
    assert key not in caplog.text


def test_keys_made_in_the_admin_are_shown_once_and_revoked_there(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # tests only
    admin = Client()
    admin.force_login(User.objects.create_superuser("ops", password="x"))
    response = admin.post("/admin/progress/apikey/add/", {"user": alice.pk, "name": "ci"}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    key = next(word for m in shown for word in m.split() if word.startswith("tp_"))
    row = authenticate(key)
    assert row is not None
    assert row.user == alice
    action = {"action": "revoke_keys", "_selected_action": [row.pk]}
    admin.post("/admin/progress/apikey/", action, follow=True)
    assert authenticate(key) is None
    listed = admin.get("/admin/progress/apikey/").content.decode()
    assert row.prefix in listed
    assert key not in listed
