"""API keys: a script or service acts as its user with ``Authorization: Bearer <key>``.

A key is ``tp_<prefix>_<secret>``, random; the database keeps the prefix and the SHA-256 of the
whole (a fast hash suffices for a random key of 256 bits), so a stolen database opens nothing.
An unknown key and a revoked one are refused alike. Bearer requests need no CSRF token: no browser
sends the header on its own, so no other site can make one ride on a user's credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

__all__ = ["ApiKeyMiddleware", "authenticate", "bearer", "make_key", "revoke"]

_PREFIX = "tp_"
_TOUCH_EVERY = timedelta(minutes=1)
_MAX_CHARS = 128


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def make_key(user: Any, name: str = "") -> tuple[Any, str]:
    """A new key for ``user``: its row, and the key itself (shown once, never stored)."""
    from .models import ApiKey

    prefix = secrets.token_hex(4)
    key = f"{_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey.objects.create(user=user, name=name, prefix=prefix, digest=_digest(key))
    return row, key


def revoke(row: Any) -> None:
    """Refuse the key from now on (its row stays, with its last use)."""
    if row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])


def bearer(value: str | None) -> str | None:
    """The key in an ``Authorization`` header's value, or None when it is not a bearer one."""
    if value is None:
        return None
    scheme, _, key = value.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def bearer_of_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in an ASGI scope's ``authorization`` header, if a bearer one."""
    for name, value in headers:
        if name == b"authorization":
            return bearer(value.decode("latin-1"))
    return None


def authenticate(key: str) -> Any | None:
    """The live key row (with its user) for ``key``, or None: unknown, revoked, or its user inactive."""
    from .models import ApiKey

    parts = key.split("_")
    if len(key) > _MAX_CHARS or len(parts) < 3 or not key.startswith(_PREFIX):
        return None
    row = ApiKey.objects.select_related("user").filter(prefix=parts[1]).first()
    if row is None or not hmac.compare_digest(row.digest, _digest(key)):
        return None
    if row.revoked_at is not None or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


def unauthorized() -> JsonResponse:
    """The one answer to a bearer key that opens nothing (unknown, revoked or malformed)."""
    body = {"error": "unauthorized", "detail": "the API key is not valid"}
    return JsonResponse(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class ApiKeyMiddleware:
    """After Django's AuthenticationMiddleware: a bearer request acts as its key's user, or gets 401."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        key = bearer(request.headers.get("Authorization"))
        if key is None:
            response: HttpResponse = self.get_response(request)
            return response
        row = authenticate(key)
        if row is None:
            return unauthorized()
        _act_as(request, row)
        response = self.get_response(request)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        key = bearer(request.headers.get("Authorization"))
        if key is not None:
            row = await sync_to_async(authenticate, thread_sensitive=False)(key)
            if row is None:
                return unauthorized()
            _act_as(request, row)
        response: HttpResponse = await self.get_response(request)
        return response


def _act_as(request: HttpRequest, row: Any) -> None:
    request.user = row.user
    request.api_key = row  # type: ignore[attr-defined]  # read by progress.views.csrf_refused


def is_bearer(request: HttpRequest) -> bool:
    """Whether the request was authenticated by an API key (so it needs no CSRF token)."""
    return getattr(request, "api_key", None) is not None
