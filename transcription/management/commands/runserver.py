"""``manage.py runserver``: daphne's, with pings that drop a client that stops reading within seconds."""

from __future__ import annotations

import io
import logging
from typing import Any, TextIO, cast

from daphne.management.commands.runserver import Command as DaphneRunserver
from daphne.server import Server
from django.conf import settings
from django.core.management.base import OutputWrapper

PING_INTERVAL = 5
PING_TIMEOUT = 10
MAX_MESSAGE_BYTES = 64 * 1024


class PromptServer(Server):  # type: ignore[misc]
    """daphne's server, pinging every PING_INTERVAL s and dropping a socket whose pong is PING_TIMEOUT s
    late: daphne gives an application no backpressure, so its ping is what ends a client that stopped
    reading (its defaults, 20 + 30 s, let such a client hold what was written to it for 50 s). Client
    frames over MAX_MESSAGE_BYTES are refused by daphne before the application buffers them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ping_interval", PING_INTERVAL)
        kwargs.setdefault("ping_timeout", PING_TIMEOUT)
        kwargs.setdefault("websocket_max_message_size", MAX_MESSAGE_BYTES)
        super().__init__(*args, **kwargs)


class _LogLines(io.TextIOBase):
    """A stream whose every line becomes a log record (JSON under LOG_FORMAT=json)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info(line.strip())
        return len(text)


class Command(DaphneRunserver):  # type: ignore[misc]
    """Run daphne for development, as ``daphne``'s runserver does, with prompt pings; with
    LOG_FORMAT=json its banner goes through logging too, so every line of its output is JSON."""

    server_cls = PromptServer

    def execute(self, *args: Any, **options: Any) -> Any:
        if settings.LOG_FORMAT == "json":
            options["no_color"] = True
            self.stdout = OutputWrapper(cast(TextIO, _LogLines(logging.getLogger("transcription.runserver"))))
        return super().execute(*args, **options)
