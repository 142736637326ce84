"""Liveness and readiness for operators: ``/healthz`` (the process answers), ``/readyz`` (what it needs
is reachable: the database, the channel layer, and any check another app registers, e.g. a broker)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse
from pydantic import BaseModel

from .openapi import Operation, operation

__all__ = ["healthz", "readyz", "register_check"]

log = logging.getLogger("progress")

Check = Callable[[], Awaitable[None]]
"""Raises when what it checks is unreachable."""

CACHE_SECONDS = 1.0
"""How long a check's answer is reused: polling every second costs one check a second, however many poll."""
TIMEOUT_SECONDS = 2.0
"""A check slower than this has failed."""


@dataclass
class _Result:
    at: float
    ok: bool
    seconds: float


clock: Callable[[], float] = time.monotonic
"""When each answer was got, against CACHE_SECONDS (tests replace it)."""

_checks: dict[str, Check] = {}
_results: dict[str, _Result] = {}


def register_check(name: str, check: Check) -> None:
    """Add a readiness check (an async callable that raises when its dependency is unreachable)."""
    _checks[name] = check


async def _database() -> None:
    def ping() -> None:
        from django.db import close_old_connections, connection

        close_old_connections()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    await sync_to_async(ping, thread_sensitive=False)()


async def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is not None:  # a group nobody joins: the send still reaches the layer's server
        await layer.group_send("progress.readyz", {"type": "readyz.ping"})


register_check("database", _database)
register_check("channel_layer", _channel_layer)


async def _run(name: str, check: Check) -> _Result:
    cached = _results.get(name)
    now = clock()
    if cached is not None and now - cached.at < CACHE_SECONDS:
        return cached
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), TIMEOUT_SECONDS)
        result = _Result(now, True, time.perf_counter() - started)
    except Exception as exc:
        log.warning("progress: readiness check %s failed: %r", name, exc)
        result = _Result(now, False, time.perf_counter() - started)
    _results[name] = result
    return result


class Health(BaseModel):
    """The process answers."""

    status: str


class CheckResult(BaseModel):
    ok: bool
    ms: float


class Readiness(BaseModel):
    """Each check's result and latency; ``failed`` names what is unreachable."""

    status: str
    failed: list[str]
    checks: dict[str, CheckResult]


@operation(Operation("GET", "Liveness: the process answers", {200: Health}, auth=()))
async def healthz(request: HttpRequest) -> JsonResponse:
    """GET /healthz: 200 while the process can answer at all (nothing else is checked)."""
    return JsonResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@operation(
    Operation(
        "GET", "Readiness: the database, the layer, the broker", {200: Readiness, 503: Readiness}, auth=()
    )
)
async def readyz(request: HttpRequest) -> JsonResponse:
    """GET /readyz: 200 when every check passes, else 503 naming what failed; each with its latency."""
    names = list(_checks)
    results = await asyncio.gather(*(_run(name, _checks[name]) for name in names))
    # The errors themselves (addresses, hosts) go to the log, not to whoever polls.
    checks = {
        name: {"ok": r.ok, "ms": round(r.seconds * 1000, 2)} for name, r in zip(names, results, strict=True)
    }
    failed = [name for name, r in zip(names, results, strict=True) if not r.ok]
    body = {"status": "ready" if not failed else "unavailable", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200, headers={"Cache-Control": "no-store"})
