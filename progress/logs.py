"""Log formatting for operators: ``LOG_FORMAT=json`` gives one JSON object per line, and no line
carries a secret from a URL's query string."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["SERVER_LOGGERS", "JsonFormatter", "RedactSecrets", "SocketLog", "redact", "redact_server_logs"]

_SECRET_PARAM = re.compile(r"([?&;](?:token|api_key|key)=)[^&;\s\"']+", re.IGNORECASE)
_API_KEY = re.compile(r"\b(tp_[0-9a-f]{8}_)[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(\bBearer\s+)(?!\[redacted\])\S+", re.IGNORECASE)
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "django.channels.server", "daphne", "django.request")
"""Loggers whose lines quote request paths with their query strings (access and WebSocket lines)."""


def redact(text: str) -> str:
    """``text`` with every ``token=`` (and key) value of a query string, and any API key (progress.keys)
    or bearer credential, replaced by ``[redacted]``."""
    if "=" in text:
        text = _SECRET_PARAM.sub(r"\1[redacted]", text)
    if "tp_" in text or "earer" in text:
        text = _API_KEY.sub(r"\1[redacted]", _BEARER.sub(r"\1[redacted]", text))
    return text


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Removes watch tokens from a record's message and arguments before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redacted(value) for value in record.args)
        return True


def redact_server_logs() -> None:
    """Filter the servers' own loggers (uvicorn's, daphne's runserver): their lines name whole URLs.

    A logger's filter sees only records logged on it, which is where these servers log their lines,
    whatever handlers (theirs or the project's) print them."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


_EXTRA = ("task_id", "client", "code", "duration_s")
"""Fields a log call may pass with ``extra=`` that are kept as fields of their own."""


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: timestamp, level, logger, message, process, and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in _EXTRA:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


_log = logging.getLogger("progress")


class SocketLog:
    """One watcher's log lines, each with its task and client as fields (of their own in JSON)."""

    __slots__ = ("client", "task_id")

    def __init__(self, task_id: str, client: str) -> None:
        self.task_id = task_id
        self.client = client

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"task_id": self.task_id, "client": self.client, **more}

    def connected(self) -> None:
        _log.info("progress: watcher of %s connected from %s", self.task_id, self.client, extra=self._extra())

    def refused(self, code: int) -> None:
        message = "progress: refused a watcher of %s from %s"
        _log.info(message, self.task_id, self.client, extra=self._extra(code=code))

    def limited(self, why: str, code: int) -> None:
        """The client broke a limit (progress.limits) and its socket is closed with ``code``."""
        message = "progress: client %s %s; closed a watcher of %s"
        _log.warning(message, self.client, why, self.task_id, extra=self._extra(code=code))

    def closed(self, code: int | None, duration: float) -> None:
        message = "progress: watcher of %s closed (%s) after %.1f s"
        extra = self._extra(code=code, duration_s=duration)
        _log.info(message, self.task_id, code, duration, extra=extra)
