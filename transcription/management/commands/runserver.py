"""``manage.py runserver``: daphne's, with pings that drop a client that stops reading within seconds."""

from __future__ import annotations

from typing import Any

from daphne.management.commands.runserver import Command as DaphneRunserver
from daphne.server import Server

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


class Command(DaphneRunserver):  # type: ignore[misc]
    """Run daphne for development, as ``daphne``'s runserver does, with prompt pings."""

    server_cls = PromptServer
