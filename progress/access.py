"""Who may see a task: its owner (a user or an anonymous session), or whoever holds a watch token.

A task's ``owner`` is an opaque key: ``user:<pk>`` for a logged-in user, ``session:<random>`` for an
anonymous session (a random value kept in the session, so it survives the session key being cycled at
login), or empty for a task started outside the web surface, which only a token opens. A watch token
is a signed, expiring value bound to one task id; it grants reading, never acting.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from importlib import import_module
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.apps import apps
from django.conf import settings
from django.core import signing
from django.http import HttpRequest

from .conf import get_settings
from .keys import authenticate, bearer_of_headers

__all__ = [
    "adopt_session_tasks",
    "may_watch",
    "new_task_id",
    "owner_key",
    "owners_of_request",
    "owners_of_scope",
    "public_detail",
    "token_valid",
    "watch_token",
]

SESSION_OWNER_KEY = "progress_owner"
"""Where an anonymous session keeps its random owner value."""
_TOKEN_SALT = "progress.access.watch-token"
_MAX_TOKEN_CHARS = 128


def new_task_id() -> str:
    """An unguessable task id: 192 random bits, URL-safe, within the task id pattern."""
    return secrets.token_urlsafe(24)


def owner_key(request: HttpRequest) -> str:
    """The owner of tasks this request creates: its user, else its session (given an owner value now)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    session = request.session
    value = session.get(SESSION_OWNER_KEY)
    if not isinstance(value, str):
        value = session[SESSION_OWNER_KEY] = secrets.token_urlsafe(18)
    return f"session:{value}"


def _owners(session: Mapping[str, Any] | None, user: Any) -> frozenset[str]:
    keys = set()
    if user is not None and getattr(user, "is_authenticated", False):
        keys.add(f"user:{user.pk}")
    value = session.get(SESSION_OWNER_KEY) if session is not None else None
    if isinstance(value, str):
        keys.add(f"session:{value}")
    return frozenset(keys)


def owners_of_request(request: HttpRequest) -> frozenset[str]:
    """Every owner key the request holds (its user's and its session's); creates nothing."""
    return _owners(getattr(request, "session", None), getattr(request, "user", None))


def owners_of_scope(scope: Mapping[str, Any]) -> frozenset[str]:
    """The owner keys of a WebSocket's scope, from its session cookie (sync: may read the database).

    A project that wraps its routes in Channels' ``AuthMiddlewareStack`` has ``session`` and ``user``
    in the scope already; otherwise the session is loaded from the cookie as Django's middleware would.
    A bearer API key in the headers (a script's socket) counts instead of any cookie.
    """
    key = bearer_of_headers(scope.get("headers", ()))
    if key is not None:
        row = authenticate(key)
        return _owners(None, row.user) if row is not None else frozenset()
    if "session" in scope:
        return _owners(scope["session"], scope.get("user"))
    session_key = _cookie(scope, settings.SESSION_COOKIE_NAME)
    if not session_key or "django.contrib.sessions" not in settings.INSTALLED_APPS:
        return frozenset()
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=session_key)
    user = None
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth import get_user

        # get_user() reads only request.session.
        user = get_user(cast(HttpRequest, SimpleNamespace(session=session)))
    return _owners(session, user)


def _cookie(scope: Mapping[str, Any], name: str) -> str | None:
    from http.cookies import SimpleCookie

    for header, value in scope.get("headers", ()):
        if header == b"cookie":
            cookies: SimpleCookie = SimpleCookie()
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header: no session
                return None
            morsel = cookies.get(name)
            return morsel.value if morsel is not None else None
    return None


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_TOKEN_SALT, sep=".")  # "." needs no escaping in a URL


def watch_token(task_id: str) -> str:
    """A token that lets its holder watch and read ``task_id`` for WATCH_TOKEN_MAX_AGE seconds."""
    # The signed value is "<task_id>.<timestamp>.<signature>"; the id is in the URL already.
    return _signer().sign(task_id)[len(task_id) + 1 :]


def token_valid(task_id: str, token: str | None) -> bool:
    """Whether ``token`` was minted for ``task_id`` by this deployment and has not expired."""
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return False
    try:
        _signer().unsign(f"{task_id}.{token}", max_age=get_settings().WATCH_TOKEN_MAX_AGE)
    except signing.BadSignature:  # tampered, expired, or another task's
        return False
    return True


_TRACEBACK = "Traceback (most recent call last)"
_PATH_OR_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+|(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:]+){2,}[\\/]?")


def public_detail(detail: str | None) -> str | None:
    """An error's technical detail as watchers may see it: whole with DEBUG or EXPOSE_TECHNICAL_DETAIL on;
    else without tracebacks (dropped), file paths and URLs (replaced), which name the server's insides."""
    if detail is None or settings.DEBUG or get_settings().EXPOSE_TECHNICAL_DETAIL:
        return detail
    if _TRACEBACK in detail:
        return None
    return _PATH_OR_URL.sub("…", detail)


def adopt_session_tasks(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """On login (``user_logged_in``): the tasks the anonymous session started become the user's, so they
    stay in the user's list after logout and on every other device."""
    from .models import Task

    value = request.session.get(SESSION_OWNER_KEY) if hasattr(request, "session") else None
    if isinstance(value, str) and user is not None and user.pk is not None:
        Task.objects.filter(owner=f"session:{value}").update(owner=f"user:{user.pk}")


def may_read(owner: str, owners: Iterable[str]) -> bool:
    """Whether a requester holding ``owners`` owns a task whose owner is ``owner`` (empty: nobody)."""
    return bool(owner) and owner in owners


def query_param(scope: Mapping[str, Any], name: str) -> str | None:
    """The last value of ``name`` in a connection's query string, if any."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[-1] if values else None


def _scope_owns(task_id: str, scope: Mapping[str, Any]) -> bool:
    from .store import owner

    found = owner(task_id)
    return found is not None and may_read(found, owners_of_scope(scope))


async def may_watch(task_id: str, scope: Mapping[str, Any], token: str | None) -> bool:
    """A valid watch token for this task, or the task's owner's session; refusals look alike."""
    if token_valid(task_id, token):
        return True
    return bool(await database_sync_to_async(_scope_owns)(task_id, scope))
