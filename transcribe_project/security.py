"""Project-wide HTTP protections: a Content-Security-Policy on every HTML response, and admin logins
throttled per client address and per username."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from progress.limits import client_address

# transcription.throttle imports models, which this module (named in INSTALLED_APPS) may not do at
# import: each function imports it when it runs.

DEFAULT_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
"""For HTML that sets no policy of its own (the admin, Django's error pages): own scripts only, no
framing. Inline styles are allowed: the admin's templates use a few, and a style runs no script."""


def _with_policy(response: HttpResponseBase) -> HttpResponseBase:
    if response.get("Content-Type", "").startswith("text/html") and not response.has_header(
        "Content-Security-Policy"
    ):
        response["Content-Security-Policy"] = DEFAULT_CSP
    return response


@sync_and_async_middleware
def content_security_policy(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Middleware: DEFAULT_CSP on every HTML response that has no policy of its own."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response: Awaitable[HttpResponseBase] = get_response(request)
            return _with_policy(await response)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _with_policy(get_response(request))

    return middleware


def _login_rules(request: HttpRequest, username: str) -> list[tuple[str, Any]]:
    from transcription import throttle

    window = throttle.Window(settings.ADMIN_LOGIN_FAILURES, settings.ADMIN_LOGIN_WINDOW)
    address = client_address(getattr(request, "scope", {"client": (request.META.get("REMOTE_ADDR"), 0)}))
    keys = [throttle.key("login-address", address)]
    if username:
        keys.append(throttle.key("login-user", username.strip().lower()))
    return [(key, window) for key in keys]


def record_failed_login(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """``user_login_failed``: count the failure against the address and the username tried."""
    from transcription import throttle

    if request is not None:
        username = str(credentials.get("username") or "")[:150]
        throttle.record([key for key, _ in _login_rules(request, username)])


class ThrottledAdminSite(AdminSite):
    """The admin, refusing logins (429) from an address or for a username with too many recent failures,
    before checking the password: a guess that happens to be right is refused too."""

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The admin's login, after the throttle."""
        from transcription import throttle

        if request.method == "POST":
            username = str(request.POST.get("username") or "")[:150]
            wait = throttle.refused(_login_rules(request, username))
            if wait is not None:
                minutes = max(1, math.ceil(wait / 60))
                response = HttpResponse(
                    f"Too many failed logins. Try again in {minutes} minute{'s' if minutes > 1 else ''}.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(max(1, math.ceil(wait)))
                return response
        return super().login(request, extra_context)


class ThrottledAdminConfig(AdminConfig):
    """``django.contrib.admin`` with ThrottledAdminSite as ``admin.site``."""

    default_site = "transcribe_project.security.ThrottledAdminSite"

    def ready(self) -> None:
        """Count failed logins, wherever they happen."""
        super().ready()
        from django.contrib.auth.signals import user_login_failed

        user_login_failed.connect(record_failed_login, dispatch_uid="transcribe-failed-logins")
