"""``manage.py housekeeping``: one sweep of what is no longer kept, as every server process does each
minute (for cron, or a deployment whose servers are rarely up)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from transcription.retention import sweep


class Command(BaseCommand):
    """Delete old tasks, unusable audio, expired reservations and sessions, old throttle hits."""

    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        """Run retention.sweep() once."""
        sweep()
