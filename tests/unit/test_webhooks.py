"""Webhooks: the retry rule, the signature recipe, the outbox written with the task's end, tries
with an injected clock and sender, and the addresses we refuse to send to."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest
from django.contrib.auth.models import User

from progress import cancel_task, outbound, report_error, report_progress, start_task, webhooks
from progress.models import WebhookDelivery
from progress.webhooks import Retry

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_progress")]


class Clock:
    def __init__(self) -> None:
        self.now = time.time() + 1  # after the event, which the store stamps with the real time

    def __call__(self) -> float:
        return self.now


class Receiver:
    """A stand-in for the receiving service: answers from a script, keeps every try."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.tries: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.tries.append((url, headers, body))
        return self.answers.pop(0)


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def hooked(alice, monkeypatch) -> str:
    """A running task of alice's with a callback to a loopback receiver (private addresses allowed)."""
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    task_id = start_task("queued", owner=f"user:{alice.pk}")
    webhooks.register(task_id, "http://127.0.0.1:9/hook", alice, "https://example.test/")
    return task_id


def test_webhooks_retry_first_within_ten_seconds_then_doubling():
    rule = Retry(base=10, max_tries=5)
    assert 1005 <= rule.next_at(1, 1000, 1000, 0.0) <= 1010  # type: ignore[operator]
    assert rule.next_at(1, 1000, 1000, 0.999) == pytest.approx(1010, abs=0.05)
    assert rule.next_at(2, 1000, 1000, 0.999) == pytest.approx(1020, abs=0.05)
    assert rule.next_at(3, 1000, 1000, 0.999) == pytest.approx(1040, abs=0.05)


def test_webhooks_retry_gives_up_after_its_tries_or_a_day():
    rule = Retry(base=10, max_tries=3)
    assert rule.next_at(3, 1000, 1000, 0.5) is None
    assert Retry(base=3600, max_tries=99).next_at(6, 0, 20 * 3600, 0.5) is None  # past 24 h


def test_webhooks_signature_is_the_documented_recipe():
    body = '{"event_id": "e"}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body.encode(), hashlib.sha256).hexdigest()
    assert webhooks.sign("whsec_x", 1700000000, body) == f"v1={expected}"


def test_webhooks_each_end_of_a_hooked_task_is_one_event(hooked):
    report_progress(hooked, "complete", 100)
    (row,) = WebhookDelivery.objects.all()
    body = json.loads(row.body)
    assert body["task_id"] == hooked
    assert body["status"] == "complete"
    assert body["error_code"] is None
    assert body["event_id"] == str(row.event_id)
    # The project's WEBHOOK_RESULT_PATH, below the address the task was created at.
    assert body["result_url"] == f"https://example.test/api/tasks/{hooked}/result"
    assert body["timestamp"].startswith("20")


def test_webhooks_failed_and_cancelled_tasks_are_events_too(alice, monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    failed, cancelled, quiet = (start_task("queued", owner=f"user:{alice.pk}") for _ in range(3))
    for task_id in (failed, cancelled):
        webhooks.register(task_id, "http://127.0.0.1:9/hook", alice, "")
    report_error(failed, "decode_failed", "We could not read the audio.")
    cancel_task(cancelled)
    report_progress(quiet, "complete", 100)  # no callback: no event
    bodies = {
        json.loads(b)["task_id"]: json.loads(b)
        for b in WebhookDelivery.objects.values_list("body", flat=True)
    }
    assert set(bodies) == {failed, cancelled}
    assert (bodies[failed]["status"], bodies[failed]["error_code"]) == ("failed", "decode_failed")
    assert bodies[cancelled]["status"] == "cancelled"


def test_webhooks_tries_until_a_2xx_with_one_event_id_and_signature(hooked, alice):
    report_progress(hooked, "complete", 100)
    clock, receiver = Clock(), Receiver(500, 503, 204)
    secret = webhooks.secret_for(alice)
    assert webhooks.run_due(clock, receiver, lambda: 0.999) == 1
    assert webhooks.run_due(clock, receiver, lambda: 0.999) == 0  # not due for 10 s
    clock.now += 10
    assert webhooks.run_due(clock, receiver, lambda: 0.999) == 1
    clock.now += 20
    assert webhooks.run_due(clock, receiver, lambda: 0.999) == 1
    clock.now += 3600
    assert webhooks.run_due(clock, receiver, lambda: 0.999) == 0  # delivered: never again
    assert len({headers["Webhook-Id"] for _, headers, _ in receiver.tries}) == 1
    for _, headers, body in receiver.tries:
        stamp = int(headers["Webhook-Timestamp"])
        assert headers["Webhook-Signature"] == webhooks.sign(secret, stamp, body.decode())
    row = WebhookDelivery.objects.get()
    assert (row.status, row.attempts) == ("delivered", 3)


def test_webhooks_given_up_after_the_last_try_with_a_log_line(hooked, settings, caplog):
    settings.PROGRESS = {**settings.PROGRESS, "WEBHOOK_MAX_TRIES": 2}
    report_progress(hooked, "complete", 100)
    clock, receiver = Clock(), Receiver(500, 500, 200)
    webhooks.run_due(clock, receiver, lambda: 0.0)
    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="progress"):
        webhooks.run_due(clock, receiver, lambda: 0.0)
    clock.now += 3600
    assert webhooks.run_due(clock, receiver, lambda: 0.0) == 0
    assert len(receiver.tries) == 2
    assert WebhookDelivery.objects.get().status == "given_up"
    assert "gave up the webhook" in caplog.text


def test_webhooks_claimed_row_is_not_tried_twice(hooked):
    report_progress(hooked, "complete", 100)
    clock = Clock()
    row = WebhookDelivery.objects.get()
    # Another process claimed it first (its lease moved next_at): this one finds nothing due.
    WebhookDelivery.objects.filter(pk=row.pk).update(next_at=clock.now + webhooks.LEASE)
    assert webhooks.run_due(clock, Receiver(200), lambda: 0.0) == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_outbound_refuses_our_own_networks(address):
    assert not outbound.allowed_address(address, allow_private=False)
    assert outbound.allowed_address(address, allow_private=True) or address == "224.0.0.1"


def test_outbound_allows_public_addresses():
    assert outbound.allowed_address("93.184.216.34", allow_private=False)
    assert outbound.allowed_address("2606:4700::1111", allow_private=False)


def test_outbound_resolve_checks_scheme_and_every_address():
    with pytest.raises(outbound.Refused):
        outbound.resolve("file:///etc/passwd", allow_private=True)
    with pytest.raises(outbound.Refused):
        outbound.resolve("http://127.0.0.1:8000/hook", allow_private=False)
    with pytest.raises(outbound.Refused):
        outbound.resolve("http://localhost/hook", allow_private=False)
    assert outbound.resolve("http://127.0.0.1:8000/hook", allow_private=True)[3] == "127.0.0.1"
    assert outbound.resolve("https://93.184.216.34/x", allow_private=False)[1:] == (
        "93.184.216.34",
        443,
        "93.184.216.34",
    )
