"""One accessor for the PROGRESS settings, with defaults and environment overrides."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

from .stages import DEFAULT as DEFAULT_STAGES
from .stages import Stages


@dataclasses.dataclass(frozen=True)
class ProgressSettings:
    """Typed view of ``settings.PROGRESS``; every field is a key of that dict."""

    HEARTBEAT_INTERVAL: float = 30.0
    """Seconds between heartbeats each WebSocket consumer sends."""
    MAX_UPDATES_PER_SECOND: float = 10.0
    """Progress messages per task per second that reach watchers (0: no coalescing)."""
    MAX_FRAME_BYTES: int = 4096
    """Largest client frame the consumer will parse."""
    MAX_PROTOCOL_ERRORS: int = 50
    """Bad client frames tolerated on one socket before it is closed with 4008."""
    CLIENT_FRAMES_PER_SECOND: float = 5.0
    """Client frames one socket may send per second, on average (a token bucket; over it: 4008)."""
    CLIENT_FRAME_BURST: int = 20
    """Client frames one socket may send at once before the per-second rate applies."""
    MAX_CONNECTIONS_PER_CLIENT: int = 64
    """Open WebSockets one client address may hold on one server process (0: no limit; over it: 4029)."""
    TRUSTED_PROXIES: str = ""
    """Comma-separated addresses or networks of proxies whose X-Forwarded-For names the client."""
    MAX_QUEUED_BYTES: int = 256 * 1024
    """Bytes of frames waiting for one socket that does not keep up before it is closed (4013)."""
    WATCH_TOKEN_MAX_AGE: int = 7 * 24 * 3600
    """Seconds a watch token (a share link) stays valid."""
    SHUTDOWN_TIMEOUT: float = 10.0
    """Seconds a server process told to stop (SIGTERM) spends closing its sockets before it exits."""
    SHUTDOWN_BATCH: int = 500
    """Sockets a stopping process tells to close at once: the next batch once their closes are sent."""
    EXPOSE_TECHNICAL_DETAIL: bool = False
    """Send errors' technical detail to watchers even with DEBUG off (it may name paths and settings)."""
    STALE_AFTER: float = 60.0
    """Seconds within which a killed job's watchers are told (dead after 0.75 of it without a beat)."""
    PUBLISH_QUEUE_SIZE: int = 10_000
    """Group messages a process may hold while the channel layer is slow or away."""
    PUBLISH_LINGER: float = 0.002
    """Seconds a process's sender waits for more messages to send them in one batch (0: none)."""
    CHANNEL_CAPACITY: int = 1000
    """Messages a consumer's channel may hold before the layer drops (recovered by seq)."""
    WEBHOOK_RETRY_BASE: float = 10.0
    """Seconds before a webhook's first retry (jittered down to half), doubling with each try after."""
    WEBHOOK_MAX_TRIES: int = 12
    """Tries of one webhook before it is given up (also given up 24 hours after its event)."""
    WEBHOOK_RESULT_PATH: str = "/api/tasks/{task_id}/"
    """Where a webhook's ``result_url`` points, below the address the task was created at."""
    STAGES: tuple[str, ...] = DEFAULT_STAGES
    """The project's stages in order, ``queued`` among them; ``complete`` follows them (progress.stages)."""

    @functools.cached_property
    def stages(self) -> Stages:
        """STAGES as rules: their order, and which come before a job runs."""
        return Stages.declared(self.STAGES)

    @property
    def min_interval(self) -> float:
        """Seconds between two progress fan-outs of one task (0: no coalescing)."""
        rate = self.MAX_UPDATES_PER_SECOND
        return 1.0 / rate if rate > 0 else 0.0


def _coerce(name: str, raw: str, default: Any) -> Any:
    """Parse an environment string to the type of the field's default."""
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"PROGRESS_{name}={raw!r} is not a valid {type(default).__name__}") from exc
    return raw


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The PROGRESS_* variables of the environment as a PROGRESS dict."""
    environ = os.environ if environ is None else environ
    result: dict[str, Any] = {}
    for field in dataclasses.fields(ProgressSettings):
        key = f"PROGRESS_{field.name}"
        if key in environ:
            result[field.name] = _coerce(field.name, environ[key], field.default)
    return result


@functools.cache
def get_settings() -> ProgressSettings:
    """The PROGRESS settings merged over the defaults, read once."""
    from django.conf import settings

    configured: Mapping[str, Any] = getattr(settings, "PROGRESS", {})
    names = {f.name for f in dataclasses.fields(ProgressSettings)}
    unknown = set(configured) - names
    if unknown:
        raise ValueError(f"Unknown PROGRESS settings: {', '.join(sorted(unknown))}")
    if "STAGES" in configured:
        configured = {**configured, "STAGES": tuple(configured["STAGES"])}
    found = ProgressSettings(**configured)
    _ = found.stages  # a bad STAGES fails at start-up, not at the first report
    return found


def _reset(*, setting: str, **kwargs: Any) -> None:
    """Forget the cached settings when a test overrides PROGRESS."""
    if setting == "PROGRESS":
        get_settings.cache_clear()
