"""Project-wide protections: frame and content policies on every page, throttled admin logins, sessions
made only when needed and kept by their tasks' owners at login."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client

from progress import start_task, watch_token
from progress.models import Task
from tests.conftest import session_owner

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]

PASSWORD = "right-password-for-tests"


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # tests only


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def login(client: Client, username: str, password: str, address: str = "127.0.0.1") -> int:
    response = client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address
    )
    return response.status_code


def test_security_every_page_denies_framing_and_html_has_a_policy(staff):
    task_id = start_task("queued", owner="")
    token = watch_token(task_id)
    admin = Client()
    admin.force_login(staff)
    pages = [
        (Client(), "/"),
        (Client(), f"/transcriptions/{task_id}/?token={token}"),
        (Client(), f"/tasks/{task_id}/?token={token}"),
        (Client(), "/tasks/missing/"),
        (Client(), "/admin/login/"),
        (admin, "/admin/"),
        (admin, "/admin/progress/task/"),
        (Client(), f"/api/tasks/{task_id}/?token={token}"),
    ]
    for client, path in pages:
        response = client.get(path)
        assert response["X-Frame-Options"] == "DENY", path
        if response["Content-Type"].startswith("text/html"):
            policy = response["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy, path
            assert "default-src 'self'" in policy, path
            assert "script-src" not in policy, path  # so default-src rules scripts: own files only


def test_security_plain_task_page_has_no_inline_script(client):
    task_id = start_task("queued", owner="")
    html = client.get(f"/tasks/{task_id}/?token={watch_token(task_id)}").content.decode()
    assert "<script>" not in html
    assert "<style>" not in html
    assert "progress/task.js" in html


def test_security_eleventh_login_is_refused_even_with_the_right_password(staff):
    client = Client()
    assert [login(client, "ops", f"wrong-{i}") for i in range(10)] == [200] * 10  # the form again
    assert login(client, "ops", PASSWORD) == 429
    assert "_auth_user_id" not in client.session


def test_security_login_throttle_follows_the_username_across_addresses(staff):
    for i in range(10):
        login(Client(), "ops", f"wrong-{i}", address=f"10.0.0.{i}")
    assert login(Client(), "OPS", PASSWORD, address="10.0.1.1") == 429


def test_security_login_throttle_follows_the_address_across_usernames(staff):
    for i in range(10):
        login(Client(), f"guess{i}", "wrong", address="10.9.9.9")
    assert login(Client(), "ops", PASSWORD, address="10.9.9.9") == 429
    assert login(Client(), "ops", PASSWORD, address="10.9.9.8") == 302  # another address logs in


def test_security_throttled_login_says_when_to_retry(staff):
    client = Client()
    for i in range(10):
        login(client, "ops", f"wrong-{i}")
    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD})
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 15 * 60
    assert b"Too many failed logins" in response.content


def test_security_visiting_the_page_makes_no_session():
    for _ in range(200):
        response = Client().get("/")
        assert response.status_code == 200
        assert "sessionid" not in response.cookies
    assert Session.objects.count() == 0


def test_security_a_reservation_makes_the_session():
    client = Client()
    assert client.post("/api/tasks/reserve").status_code == 201
    assert Session.objects.count() == 1


def test_security_a_sessions_tasks_become_the_users_at_login(staff):
    client = Client()
    task_id = start_task("queued", owner=session_owner(client))
    assert login(client, "ops", PASSWORD) == 302
    assert Task.objects.get(pk=task_id).owner == f"user:{staff.pk}"
    client.post("/admin/logout/")
    listed = client.get("/api/transcriptions/").json()["tasks"]
    assert listed == []  # logged out: the session is gone, and with it any claim to the task
    assert login(client, "ops", PASSWORD) == 302
    listed = client.get("/api/transcriptions/").json()["tasks"]
    assert [row["task_id"] for row in listed] == [task_id]
