"""Log formatting for operators: ``LOG_FORMAT=json`` gives one JSON object per line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter"]

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
