"""Webhooks: when a task with a callback ends, its user's URL gets a signed POST, at least once.

The event is written to an outbox row in the transaction that ends the task (``ended``), so a
crash after it loses nothing. Whatever runs jobs runs the deliverer (every server process, every
Celery worker; ``ensure_started``): due rows are claimed with a lease, so two processes never send
one try at once. Every try of an event sends the same body and ``Webhook-Id``; a 2xx answer ends it.
Signature (``Webhook-Signature: v1=<hex>``): HMAC-SHA256 with the user's secret over
``f"{Webhook-Timestamp}.{body}"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from . import metrics, outbound
from .conf import get_settings
from .schemas import utcnow

__all__ = ["Retry", "ended", "ensure_started", "register", "run_due", "secret_for", "sign", "start_thread"]

log = logging.getLogger("progress")

GIVE_UP_AFTER = 24 * 3600.0
LEASE = 30.0
"""Seconds a claimed try holds its row: longer than a try can take (one 5 s request)."""
POLL = 1.0


@dataclass(frozen=True)
class Retry:
    """When to try again: exponential backoff with jitter, and when to give up. No I/O."""

    base: float
    max_tries: int
    give_up_after: float = GIVE_UP_AFTER

    def next_at(self, tries: int, created_at: float, now: float, jitter: float) -> float | None:
        """After ``tries`` failed tries, when the next goes (``jitter`` in [0, 1)); None: give up."""
        if tries >= self.max_tries:
            return None
        delay = self.base * 2 ** (tries - 1) * (0.5 + jitter / 2)
        at = now + delay
        return at if at <= created_at + self.give_up_after else None


def sign(secret: str, timestamp: int, body: str) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (the documented recipe)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"v1={digest}"


def secret_for(user: Any, rotate: bool = False) -> str:
    """The user's signing secret, made on first use (or anew, with ``rotate``)."""
    from .models import WebhookSecret

    row, made = WebhookSecret.objects.get_or_create(user=user, defaults={"secret": _new_secret()})
    if rotate and not made:
        row.secret = _new_secret()
        row.save(update_fields=["secret"])
    return row.secret


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def register(task_id: str, url: str, user: Any, base_url: str) -> None:
    """Give a task a callback: ``url`` is POSTed when it ends. The caller has checked it with
    ``outbound.resolve`` (before making the task); every try checks it again."""
    from .models import Callback

    Callback.objects.update_or_create(
        task_id=task_id, defaults={"url": url, "user": user, "base_url": base_url}
    )


def ended(task_id: str, status: str, error_code: str | None, now: float) -> None:
    """In the transaction that ends a task: its event into the outbox, if it has a callback."""
    from .models import Callback, WebhookDelivery

    callback = Callback.objects.filter(task_id=task_id).first()
    if callback is None:
        return
    event_id = uuid.uuid4()
    path = get_settings().WEBHOOK_RESULT_PATH.format(task_id=task_id)
    body = {
        "event_id": str(event_id),
        "task_id": task_id,
        "status": status,
        "error_code": error_code,
        "result_url": callback.base_url.rstrip("/") + path,
        "timestamp": utcnow().isoformat(),
    }
    WebhookDelivery.objects.create(
        event_id=event_id,
        task_id=task_id,
        user_id=callback.user_id,
        url=callback.url,
        body=json.dumps(body),
        created_at=now,
        next_at=now,
    )


Post = Callable[[str, bytes, dict[str, str]], int]


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    return outbound.post(url, body, headers).status


def run_due(
    clock: Callable[[], float] = time.time, post: Post = _post, jitter: Callable[[], float] = random.random
) -> int:
    """Try every delivery that is due, each claimed first; how many were tried."""
    from .models import WebhookDelivery

    settings = get_settings()
    rule = Retry(settings.WEBHOOK_RETRY_BASE, settings.WEBHOOK_MAX_TRIES)
    now = clock()
    due = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_at__lte=now)
    tried = 0
    for row in list(due.order_by("next_at")[:50]):
        claimed = WebhookDelivery.objects.filter(pk=row.pk, next_at=row.next_at).update(next_at=now + LEASE)
        if not claimed:
            continue  # another process took it
        tried += 1
        _try(row, rule, clock, post, jitter)
    return tried


def _try(row: Any, rule: Retry, clock: Callable[[], float], post: Post, jitter: Callable[[], float]) -> None:
    from .models import WebhookDelivery, WebhookSecret

    secret = WebhookSecret.objects.filter(user_id=row.user_id).values_list("secret", flat=True).first()
    secret = secret or secret_for(row.user)
    stamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "progress-webhooks",
        "Webhook-Id": str(row.event_id),
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": sign(secret, stamp, row.body),
    }
    error = ""
    try:
        status = post(row.url, row.body.encode(), headers)
        if 200 <= status < 300:
            WebhookDelivery.objects.filter(pk=row.pk).update(
                status=WebhookDelivery.Status.DELIVERED, attempts=row.attempts + 1, last_error=""
            )
            metrics.WEBHOOKS.labels("delivered").inc()
            return
        error = f"answered {status}"
    except outbound.Refused as exc:
        error = f"refused: {exc}"
    except Exception as exc:  # timeouts, resets, TLS: the receiver is not reachable now
        error = repr(exc)[:300]
    tries = row.attempts + 1
    next_at = rule.next_at(tries, row.created_at, clock(), jitter())
    if next_at is None or error.startswith("refused"):
        WebhookDelivery.objects.filter(pk=row.pk).update(
            status=WebhookDelivery.Status.GIVEN_UP, attempts=tries, last_error=error
        )
        metrics.WEBHOOKS.labels("given_up").inc()
        message = "progress: gave up the webhook %s of task %s after %d tries: %s"
        log.warning(message, row.event_id, row.task_id, tries, error, extra={"task_id": row.task_id})
        return
    WebhookDelivery.objects.filter(pk=row.pk).update(attempts=tries, next_at=next_at, last_error=error)
    metrics.WEBHOOKS.labels("retried").inc()


_loop_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def _run_due_safely() -> None:
    close_old_connections()
    run_due()


async def _run_on_loop() -> None:
    while True:
        await asyncio.sleep(POLL)
        try:
            await sync_to_async(_run_due_safely, thread_sensitive=False)()
        except Exception:
            log.exception("progress: the webhook deliverer failed; trying again")


def ensure_started() -> None:
    """Deliver on the running loop (a server process) unless it does already (cheap; call per request)."""
    loop = asyncio.get_running_loop()
    running = _loop_tasks.get(loop)
    if running is None or running.done():
        _loop_tasks[loop] = loop.create_task(_run_on_loop(), name="progress-webhooks")


_started_pid: int | None = None
_lock = threading.Lock()


def start_thread() -> None:
    """Deliver on a daemon thread of this process, once (Celery workers, which have no loop)."""
    global _started_pid
    with _lock:
        if _started_pid == os.getpid():
            return
        _started_pid = os.getpid()
    threading.Thread(target=_loop, name="progress-webhooks", daemon=True).start()


def _loop() -> None:
    while True:
        time.sleep(POLL)
        try:
            _run_due_safely()
        except Exception:
            log.exception("progress: the webhook deliverer failed; trying again")
